import ParityCLI

QwenParity.main()
