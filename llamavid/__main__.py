from llamavid.cli.main import main

raise SystemExit(main())
