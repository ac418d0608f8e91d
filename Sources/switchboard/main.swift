import ArgumentParser
import SwitchboardCLI

SwitchboardCommand.main()
