from homellm.cli.main import main

main()
