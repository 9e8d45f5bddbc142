package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// cmdPasswd hashes a password for mqtt.users[].password_hash. It reads the
// password from stdin rather than a flag so it never lands in shell history.
func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("passwd", stderr)
	cost := fs.Int("cost", bcrypt.DefaultCost, "bcrypt cost (4-31); each step doubles the work of every login")
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
	fmt.Fprintln(stdout, string(hash))
	return nil
}
