from duda.cli import main

raise SystemExit(main())
