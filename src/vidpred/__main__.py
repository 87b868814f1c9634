from vidpred.cli import main

raise SystemExit(main())
