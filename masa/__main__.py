from masa.cli import main

main()
