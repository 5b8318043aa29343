"""Evaluation of generated images: distances between image sets, per group, with intervals that
hold at small n; memorisation and attribute-fidelity checks; classifiers trained on generated images.

The public functions, each with its formula in its docstring:

- :func:`fid_from_features`: Frechet distance of Gaussians fitted to two feature sets;
- :func:`kid_from_features`: Kernel Inception Distance (unbiased MMD^2, cubic kernel, subsets);
- :func:`prdc`: precision, recall, density and coverage (Naeem et al. 2020);
- :func:`equity_scaled`: an overall metric penalised by its groups' deviations;
- :func:`two_sample_jackknife`: a bias-corrected interval for set-to-set statistics (FID, KID, ES);
- :func:`memorisation_audit`, :func:`closest_pairs`, :func:`calibrated_mifid_eps`: are generated
  images copies of training images;
- :func:`train_attribute_classifiers`, :func:`attribute_fidelity`: does an image show the group its
  prompt asked for.

The per-method table of all of them is :func:`fairdiff.evaluate.features.generation_metrics`.
"""
from fairdiff.evaluate.fidelity import attribute_fidelity, fidelity_table, train_attribute_classifiers
from fairdiff.evaluate.intervals import Jackknife, two_sample_jackknife, wilson_interval
from fairdiff.evaluate.kid import kid_from_features
from fairdiff.evaluate.memorisation import (calibrated_mifid_eps, closest_pairs, copy_threshold, memorisation_audit,
                                            nearest_neighbours)
from fairdiff.evaluate.metrics import (equity_scaled, fid_from_features, inception_score_from_logits,
                                       mifid_from_features)
from fairdiff.evaluate.prdc import prdc

__all__ = ["Jackknife", "attribute_fidelity", "calibrated_mifid_eps", "closest_pairs", "copy_threshold",
           "equity_scaled", "fid_from_features", "fidelity_table", "inception_score_from_logits", "kid_from_features",
           "memorisation_audit", "mifid_from_features", "nearest_neighbours", "prdc", "train_attribute_classifiers",
           "two_sample_jackknife", "wilson_interval"]
