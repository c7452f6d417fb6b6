from trietcd.cli import main

main()
