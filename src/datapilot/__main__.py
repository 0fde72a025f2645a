from datapilot.cli import main

main()
