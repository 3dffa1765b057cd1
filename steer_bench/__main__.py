from steer_bench.cli import main

raise SystemExit(main())
