package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/millstream/millstream/kafkaproto"
)

// cmdPasswd hashes a password for mqtt.users[].password_hash. It reads the
// password from stdin rather than a flag so it never lands in shell history.
func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("passwd", stderr)
	cost := fs.Int("cost", bcrypt.DefaultCost, "bcrypt cost (4-31); each step doubles the work of every login")
	scram := fs.Bool("scram", false, "also print SCRAM-SHA-256 and SCRAM-SHA-512 credentials (for Kafka clients), as YAML lines for the user's entry")
	iterations := fs.Int("scram-iterations", 8192, "SCRAM iteration count (at least 4096)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("read password from stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return fmt.Errorf("%w: no password on stdin (try: echo -n 'secret' | millstream passwd)", errUsage)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), *cost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	if !*scram {
		fmt.Fprintln(stdout, string(hash))
		return nil
	}
	fmt.Fprintf(stdout, "password_hash: %s\n", hash)
	for _, m := range []struct{ key, mech string }{{"scram_sha256", kafkaproto.MechSCRAMSHA256}, {"scram_sha512", kafkaproto.MechSCRAMSHA512}} {
		c, err := kafkaproto.NewSCRAMCredential(m.mech, pw, *iterations)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s\n", m.key, c)
	}
	return nil
}
