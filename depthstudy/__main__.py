from depthstudy.cli import main

main()
