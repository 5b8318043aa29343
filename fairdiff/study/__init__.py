"""The controlled multi-seed study: does Fair Bayesian Perturbation narrow a planted group gap?

A profile (``configs/study.yaml``) plants a disparity in the synthetic data: one group is made rare
and different to draw (``data.synth``, stated in the dataset's ``synth_params.json``), and the
data's seed (``data.seed``) is fixed, so every training seed sees the same subjects. For each seed
of ``study.seeds`` every **arm** of ``study.arms`` (a method with a few settings changed: the
paper's fairbo, the fixed-sigma control, oracle sigmas, targeted baselines, group DRO...) is
trained, sampled and evaluated through the ordinary stages, all arms of a seed from the same base
pipeline and initial weights and scored by the same feature extractor. The statistics pair the
arms by seed and follow the analysis pre-registered in ``study.analysis`` (docs/method.md §5.9).

The package, file by file:

- :mod:`~fairdiff.study.arms`: arms, seeds and their folders (what a seed's arms share);
- :mod:`~fairdiff.study.statistics`: t intervals, sign-flip, Holm, TOST, non-inferiority, the
  minimum detectable effect, the primary and secondary tables;
- :mod:`~fairdiff.study.diagnostics`: does BO's objective carry a signal (R^2 against a shuffled
  null, SNR, absent groups) and can BO recover a known optimum through noise;
- :mod:`~fairdiff.study.runner`: :func:`run_study` and :func:`run_sweep`, (seed, arm) runs in
  parallel worker processes with results identical to a serial run; result files and the export;
- :mod:`~fairdiff.study.tables`: what is read from each run, sigma against the drift band, the
  plain table printer; :mod:`~fairdiff.study.figures`: notebook 06's figures, drawn from the tables.

Everything is resumable: a finished stage is a cache hit and an unfinished training run resumes
from its newest checkpoint, so rerunning ``fairdiff study`` after a kill continues where it stopped.
Results: ``runs/study/<profile>/results/*.csv``; ``fairdiff study --export`` copies them to the
tracked ``figures/study/<profile>/`` with ``provenance.json``.
"""
from __future__ import annotations

from fairdiff.study.arms import (Arm, Planted, arm_context, arms_from_config, arms_table, check_arms, fixed_sigmas,
                                 planted_group, seed_context, share_seed_work, study_root, sweep_arms)
from fairdiff.study.runner import (EXPORTS, FIGURES, RESULT_FILES, StudyResult, export, load_results, load_sweep,
                                   planted_gap_check, results_folder, run_notebook, run_study, run_sweep, shown)
from fairdiff.study.statistics import (arm_means, bootstrap_t_test, holm, minimum_detectable_effect, noninferiority,
                                       noninferiority_table, paired_t_pvalue, percent_of, planted_summary,
                                       primary_table, secondary_effects, seeds_for_halfwidth, sign_flip_pvalue,
                                       sweep_cells, t_interval, tost, verdict)
from fairdiff.study.tables import (drift_band, final_sigmas, format_ci, metric_specs, plain_tables, planted_rows,
                                   seed_metrics, sigma_log, sigma_tables)
