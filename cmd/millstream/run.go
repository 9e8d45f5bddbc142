package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/millstream/millstream/config"
	"github.com/millstream/millstream/node"
)

// gcPercent is the garbage collector's target for `millstream run` unless
// GOGC says otherwise. The server's live heap is small (tens of MB) and its
// garbage is per message: collecting at 5× the live heap instead of 2×
// costs little memory and cut broker CPU per QoS 1 message by a fifth
// (42 to 33 µs, 8 publishers; docs/benchmarks.md).
const gcPercent = 400

// serverProcs is how many threads may run the server's Go code at once
// unless GOMAXPROCS says otherwise: one fewer than Go would use (its default
// follows the CPUs the process may use and its cgroup quota), at least one.
//
// The MQTT path is a pipeline of single goroutines (the event loop, a
// fanner, one writer per log partition) handing messages on, and with a
// spare P Go wakes another thread for every goroutine made ready: a futex
// wake and a context switch that cost more than the work handed over. The
// core left over serves what the server asks of the kernel (TCP, page cache,
// the disk's completions) and whatever else runs on the gateway. On 2 CPUs,
// with the load generator on the same machine, one P against two in
// alternating pairs raised the QoS 1 peak on average (64 publishers 82k
// against 76k msg/s, 1 publisher 29k against 23k), cut the PUBACK p99 at half
// of it with 1 and 64 publishers (64: 7.3-11.6 against 10.8-14.5 ms; even with
// 8) and the broker's CPU per message by 15-20%; docs/benchmarks.md, twelfth
// session. Set once at start: Go no longer follows later changes of the
// cgroup quota.
func serverProcs(goDefault int) int {
	return max(1, goDefault-1)
}

func cmdRun(args []string, stderr io.Writer) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	procsFrom := "the GOMAXPROCS environment variable"
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(serverProcs(runtime.GOMAXPROCS(0)))
		procsFrom = "default: one less than the CPUs available, at least 1 (set GOMAXPROCS to choose)"
	}
	fs := newFlagSet("run", stderr)
	cfgFile := fs.String("config", "", "YAML configuration file (default: built-in defaults)")
	dataDir := fs.String("data-dir", "", "directory for the log and derived state (overrides data_dir)")
	mqttAddr := fs.String("mqtt-addr", "", "MQTT TCP listener address (overrides the first tcp listener)")
	httpAddr := fs.String("http-addr", "", "HTTP API, UI and /metrics address (overrides http.address)")
	kafkaAddr := fs.String("kafka-addr", "", "serve the log over the Kafka protocol on this address (enables kafka_endpoint)")
	logFormat := fs.String("log-format", "", "log format: text or json (overrides logging.format)")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn or error (overrides logging.level)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}

	cfg, err := loadConfig(*cfgFile)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		cfg.SetDataDir(*dataDir)
	}
	if *mqttAddr != "" {
		if err := cfg.SetMQTTAddr(*mqttAddr); err != nil {
			return fmt.Errorf("%w: --mqtt-addr: %v", errUsage, err)
		}
	}
	if *httpAddr != "" {
		cfg.SetHTTPAddr(*httpAddr)
	}
	if *kafkaAddr != "" {
		cfg.SetKafkaAddr(*kafkaAddr)
	}
	if *logFormat != "" {
		cfg.Logging.Format = *logFormat
	}
	if *logLevel != "" {
		cfg.Logging.Level = *logLevel
	}
	if err := config.Validate(cfg); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}

	logger, err := newLogger(cfg.Logging, stderr)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	logger.Info("Go runtime", "gomaxprocs", runtime.GOMAXPROCS(0), "cpus", runtime.NumCPU(), "gomaxprocs_from", procsFrom)

	n, err := node.New(cfg, logger)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := n.Start(ctx); err != nil {
		n.Close()
		return err
	}
	<-ctx.Done()
	logger.Info("shutting down: closing listeners and flushing the log")
	if err := n.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped cleanly")
	return nil
}

// loadConfig loads the file if one is named, else the defaults; environment
// overrides apply either way.
func loadConfig(path string) (config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, fmt.Errorf("configuration:\n%w", err)
	}
	return cfg, nil
}

func newLogger(c config.Logging, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("logging.level %q: use debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("logging.format %q: use text or json", c.Format)
	}
}

func cmdConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config", stderr)
	cfgFile := fs.String("config", "", "YAML configuration file to validate")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgFile)
	if err != nil {
		return err
	}
	if err := config.Validate(cfg); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	out, err := config.Dump(cfg)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

func version() string {
	if node.Version != "dev" {
		return node.Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return node.Version
}
