from qroute_cli.cli import main

main()
