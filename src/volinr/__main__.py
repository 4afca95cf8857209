from volinr.cli import main

raise SystemExit(main())
