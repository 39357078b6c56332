// Command credgw is the one credgw binary: the gateway, its tools and the
// hsm-sim simulator. This package only parses flags and wires packages.
package main

import (
	"errors"
	"fmt"
	"github.com/spf13/pflag"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		if !errors.As(err, new(loggedError)) {
			printError(os.Stderr, err)
		}
		os.Exit(1)
	}
}

// loggedError is an error a command has logged already (serve, as a JSON
// line): main exits 1 without printing it again.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// printError prints a command's error for the terminal: it may carry a
// gateway's status message, so without control characters (terminalSafe).
func printError(w io.Writer, err error) {
	fmt.Fprintln(w, "credgw:", terminalSafe(err.Error()))
}

// terminalSafe is text from elsewhere (a gateway's messages) made safe to
// print on a terminal: control characters (escape sequences that move the
// cursor, set the clipboard or the title; carriage returns that overwrite
// a line) and bidirectional embeddings, overrides and isolates become
// U+FFFD. Newlines and tabs stay (errors of several lines), and so do the
// directional marks (LRM, RLM, ALM) that names in Arabic or Hebrew use.
func terminalSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n', r == '\t', r == '\u200e', r == '\u200f', r == '\u061c':
			return r
		case unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r):
			return '\uFFFD'
		}
		return r
	}, s)
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "credgw",
		Short: "Derived PIV credential issuance gateway (NIST SP 800-157)",
		Long: `credgw validates a person's PIV card (PKI-AUTH over PKCS#11 or TLS client
authentication) and issues NIST SP 800-157 derived credentials to a mobile device.

Secrets (PINs) are read from files (--pin-file, pin-source=), never from flags:
a pkcs11: URI with pin-value= is refused on the command line.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionLine(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return refusePINInFlags(cmd)
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(flagError)
	defer strictGroups(root)
	root.AddCommand(newVersionCmd(), newConfigCmd(), newManCmd(), newServeCmd(), newMigrateCmd(), newDemoCmd(), newDevCmd(), newCACmd(), newPIVCmd(), newEnrollCmd(), newRedeemCmd(), newBenchCmd(), newHSMSimCmd(), newCardCmd(), newAuditCmd(), newAdminCmd(), newRenewCmd(), newBackupCmd(), newRestoreCmd())
	return root
}

// strictGroups makes every command that only groups others (ca, config,
// audit…) refuse an argument that is none of them: cobra prints the
// group's help and exits 0, so a typo in a script ("audit verfy") passed.
func strictGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		if sub.HasSubCommands() && !sub.Runnable() {
			sub.Args = cobra.ArbitraryArgs
			sub.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				return unknownCommand(cmd, args[0])
			}
		}
		strictGroups(sub)
	}
}

// unknownCommand is the error for a word that is none of cmd's commands.
func unknownCommand(cmd *cobra.Command, word string) error {
	msg := fmt.Sprintf("unknown command %q for %q", word, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's own default, set only for the root
	}
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return fmt.Errorf("%s (run '%s --help' for its commands)", msg, cmd.CommandPath())
}

// flagError says, for a flag the command does not have, the closest one
// it has and where its flags are listed. On a group given a word that is
// none of its commands, the word is the mistake, not the flag after it.
func flagError(cmd *cobra.Command, err error) error {
	if cmd.HasSubCommands() {
		if words := cmd.Flags().Args(); len(words) > 0 {
			return unknownCommand(cmd, words[0])
		}
	}
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok {
		return fmt.Errorf("%w (run '%s --help' for its flags)", err, cmd.CommandPath())
	}
	best, bestD := "", 3 // at most two edits away, or a prefix
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		d := editDistance(name, f.Name)
		if strings.HasPrefix(f.Name, name) && len(name) >= 3 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best != "" {
		return fmt.Errorf("%w: did you mean --%s? (run '%s --help' for its flags)", err, best, cmd.CommandPath())
	}
	return fmt.Errorf("%w (run '%s --help' for its flags)", err, cmd.CommandPath())
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version (as --version does)",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
		},
	}
}

// versionLine is what --version prints: the release (set at build time),
// the module version, the VCS revision the binary was built from (with
// "+modified" for a dirty tree) and the Go release.
func versionLine() string {
	line := "credgw " + version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return line
	}
	rev, modified := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	parts := []string{"module " + bi.Main.Path + " " + bi.Main.Version}
	if rev != "" {
		if modified {
			rev += "+modified"
		}
		parts = append(parts, "revision "+rev)
	}
	parts = append(parts, bi.GoVersion)
	return line + " (" + strings.Join(parts, ", ") + ")"
}
