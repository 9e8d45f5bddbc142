// Command millstream runs the Millstream industrial event streaming platform
// and its tools. See `millstream help`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `millstream - industrial event streaming in one binary

Usage:
  millstream run      [--config FILE] [--data-dir DIR] [--mqtt-addr HOST:PORT] [--http-addr HOST:PORT] [--kafka-addr HOST:PORT]
  millstream replay   --topic T [--from OFFSET|RFC3339] [--to OFFSET|RFC3339] [--data-dir DIR | --server URL]
  millstream query    SERIES-PATTERN --from T --to T [--step 1m --agg avg] [--format csv|json] [--server URL | --data-dir DIR]
  millstream bench    ingest|uns [flags]    load scenarios, one JSON line per result
  millstream simulate [flags]               Sparkplug B edge nodes and devices with plant-like signals
  millstream config   [--config FILE]       validate and print the effective configuration
  millstream passwd                         read a password on stdin, print its bcrypt hash for mqtt.users
  millstream version

Run 'millstream COMMAND -h' for the flags of a command.
`

// errUsage marks errors caused by the command line; they exit with status 2.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "replay":
		err = cmdReplay(args[1:], stdout, stderr)
	case "query":
		err = cmdQuery(args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(args[1:], stdout, stderr)
	case "simulate":
		err = cmdSimulate(args[1:], stdout, stderr)
	case "config":
		err = cmdConfig(args[1:], stdout, stderr)
	case "passwd":
		err = cmdPasswd(args[1:], stdin, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "millstream", version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "millstream: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "millstream %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "millstream %s: %v\n", args[0], err)
		return 1
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("millstream "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses and turns flag errors into usage errors. Positional
// arguments are rejected unless the command takes them.
func parseFlags(fs *flag.FlagSet, args []string, positional bool) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if !positional && fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}
