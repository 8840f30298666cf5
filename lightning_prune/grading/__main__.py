from lightning_prune.grading.cli import main

raise SystemExit(main())
