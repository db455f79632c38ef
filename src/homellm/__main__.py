from homellm.cli.app import main

main()
