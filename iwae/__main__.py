from iwae.cli import main

raise SystemExit(main())
