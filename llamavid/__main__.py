from llamavid.cli import main

raise SystemExit(main())
