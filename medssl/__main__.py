"""`python -m medssl` runs the command-line interface."""

from medssl.cli.app import main

if __name__ == "__main__":
    main()
