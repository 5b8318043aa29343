from fairdiff.cli import main

raise SystemExit(main())
