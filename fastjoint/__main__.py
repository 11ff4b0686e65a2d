from fastjoint.cli import main

raise SystemExit(main())
