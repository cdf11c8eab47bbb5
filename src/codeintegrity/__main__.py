from codeintegrity.cli.main import main

main()
