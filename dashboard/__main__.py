from dashboard.service import main

raise SystemExit(main())
