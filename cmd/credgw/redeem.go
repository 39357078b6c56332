package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newRedeemCmd() *cobra.Command {
	var qrFile, qrPayload, qrPayloadFile, out, passwordFile, pinFile, keystore string
	var anchorFiles []string
	var trustGatewayCA bool
	var att attestFlags
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "redeem (--qr FILE.png | --qr-payload-file F | --qr-payload STR) --out DIR --trust-anchor ROOT.pem [--password-file F] [--keystore-pin-file F]",
		Short: "The reference device agent: scan, type the password, download, install, confirm",
		Long: `What the device app does: decode the QR code, trust the gateway only through the
pin it carries, ask the password (without echo) unless a file gives it, make the
device keys (software P-256), download the credentials with a progress bar
(resuming a cut connection), verify the SHA-256, the chains, the keys and the
profiles, write the files below under the keystore PIN, and confirm.

The credentials must chain to --trust-anchor: the root CA of your agency's PKI
(a device's management profile gives it). The QR code pins only the gateway's
TLS certificate; without an anchor of its own the device would install
certificates of any CA the gateway sends, and escrowed keys it knows. For a
gateway made by 'credgw ca init' the root is the first of its ca.chain_files
(ca init prints it; ca/root.crt for 'credgw dev init'). --trust-gateway-ca instead accepts the CA the download
carries: for trying credgw out, never for a real device.

DIR then holds (each PKCS#12 with a friendly name and a localKeyId on its key):
  auth.p12, auth.crt            derived PIV Authentication key and certificate
  signature.p12, signature.crt  S/MIME signing key and certificate
  encryption.p12                the escrowed S/MIME encryption key and its key
                                history in one file, the current key first
  encryption-00-current.p12     the same keys, one file each, for programs
  encryption-NN-until-DATE.p12  that read only the first key of a file: NN
                                orders them (00 the current key, then the
                                history newest first), DATE is when that
                                key's certificate ends (YYYY-MM-DD, UTC)
  encryption.crt                the current encryption certificate
  chain.pem                     the issuing CA chain
One-key files of an earlier install in DIR that this one does not write are
removed. The PKCS#12 files use PBKDF2-HMAC-SHA-256 with 600,000 iterations
and an HMAC-SHA-256 MAC with 1,200,000 (OWASP's count for PBKDF2; OpenSSL 3,
NSS, Java keytool and Python cryptography read them).

With --keystore (a PKCS#11 token, as a phone's secure element) the device keys
are made on the token, the escrowed encryption keys (current and history) are
stored on it, non-extractable, and the certificates beside them; DIR then
holds only chain.pem and the .crt files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			given := 0
			for _, s := range []string{qrFile, qrPayload, qrPayloadFile} {
				if s != "" {
					given++
				}
			}
			if given != 1 {
				return fmt.Errorf("give exactly one of --qr, --qr-payload-file and --qr-payload")
			}
			anchors, err := trustAnchors(anchorFiles, trustGatewayCA)
			if err != nil {
				return err
			}
			if qrPayloadFile != "" {
				if qrPayload, err = readPayloadFile(cmd.InOrStdin(), qrPayloadFile); err != nil {
					return err
				}
			}
			if qrFile != "" {
				png, err := os.ReadFile(qrFile)
				if err != nil {
					return fmt.Errorf("--qr: %w", err)
				}
				if qrPayload, err = agent.DecodeQR(png); err != nil {
					return fmt.Errorf("--qr %s: %w", qrFile, err)
				}
			}
			p, err := code.ParsePayload(qrPayload)
			if err != nil {
				return err
			}
			password, err := secretInput("--password-file", passwordFile, "Password shown under the QR code: ")
			if err != nil {
				return err
			}
			pin, err := newKeystorePIN(pinFile)
			if err != nil {
				return err
			}
			var tok *pkcs11.Token
			if keystore != "" {
				u, err := pkcs11.ParseURI(keystore)
				if err != nil {
					return err
				}
				mod := ""
				if u.ModulePath == "" {
					if mod, err = pkcs11.SoftHSMModule(); err != nil {
						return fmt.Errorf("--keystore has no module-path and %w", err)
					}
				}
				if tok, err = pkcs11.OpenURI(ctx, u, mod); err != nil {
					return err
				}
				defer tok.Close()
			}
			attestFn, err := att.fn()
			if err != nil {
				return err
			}
			w := cmd.ErrOrStderr()
			res, err := agent.Redeem(ctx, agent.Options{
				Payload: p, Password: password, OutDir: out, KeystorePIN: pin, Keystore: tok, Attest: attestFn, TrustAnchors: anchors,
				Device: &credgwv1.DeviceInfo{Model: "credgw reference agent", Os: runtime.GOOS, AgentVersion: version},
				Events: progressPrinter(w),
			})
			if err != nil {
				return rpcErr(err)
			}
			o := cmd.OutOrStdout()
			fmt.Fprintf(o, "Installed and confirmed (credential set %s, package sha256 %x", terminalSafe(res.CredentialSetID), res.SHA256[:8])
			if res.Resumes > 0 {
				fmt.Fprintf(o, ", resumed %s", plural(res.Resumes, "time", "times"))
			}
			fmt.Fprintln(o, ")")
			printCertificates(o, res)
			for _, f := range res.Files {
				fmt.Fprintf(o, "  wrote %s\n", f)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&qrFile, "qr", "", "PNG image of the QR code")
	f.StringVar(&qrPayload, "qr-payload", "", "the QR code's text (credgw://activate?...); other local users can read it in the process list while redeem runs: prefer --qr-payload-file")
	f.StringVar(&qrPayloadFile, "qr-payload-file", "", "file holding the QR code's text, or - to read it from standard input")
	f.StringVar(&out, "out", "", "directory for the installed credentials (required)")
	f.StringVar(&passwordFile, "password-file", "", "file with the numeric password (else asked without echo)")
	f.StringVar(&pinFile, "keystore-pin-file", "", "file with the keystore PIN (else asked without echo)")
	f.StringVar(&keystore, "keystore", "", "PKCS#11 token for the device keys and the escrowed encryption keys, e.g. 'pkcs11:token=Device?pin-source=FILE' (default: software keys in PKCS#12 files)")
	f.StringArrayVar(&anchorFiles, "trust-anchor", nil, "PEM file of the root CA(s) the credentials must chain to: your agency's root (repeatable; required unless --trust-gateway-ca)")
	f.BoolVar(&trustGatewayCA, "trust-gateway-ca", false, "accept the CA chain the download carries instead of a --trust-anchor: for trying credgw out only")
	f.DurationVar(&timeout, "timeout", agentTimeout, "overall time limit (beyond the agent's wait for a busy or restarting gateway, agent.DefaultMaxWait)")
	att.add(cmd)
	cmd.MarkFlagRequired("out")
	return cmd
}

// agentTimeout is --timeout of redeem and renew by default: longer than
// the agent's two waits for a busy or restarting gateway (before the
// download and before the confirmation, agent.DefaultMaxWait each, itself
// beyond an activation code's life) plus a download, so that a wait ends
// with the gateway's answer or the code's expiry, never with the overall
// limit cutting a confirmation (whose answer would then be unknown, and
// the credentials revoked unconfirmed).
const agentTimeout = 2*agent.DefaultMaxWait + 15*time.Minute

// trustAnchors reads --trust-anchor, or refuses to go on without one
// unless --trust-gateway-ca says to take the download's own chain.
func trustAnchors(files []string, trustGatewayCA bool) ([]*x509.Certificate, error) {
	switch {
	case len(files) > 0 && trustGatewayCA:
		return nil, errors.New("give --trust-anchor or --trust-gateway-ca, not both")
	case trustGatewayCA:
		return nil, nil
	case len(files) == 0:
		return nil, errors.New("--trust-anchor is required: the PEM file of the root CA your credentials must chain to " +
			"(your agency's root; for a gateway made by 'credgw ca init', the first of its ca.chain_files, which ca init prints; ca/root.crt for 'credgw dev init'). " +
			"Without it a gateway that is not yours could install a CA of its own. " +
			"(--trust-gateway-ca accepts the CA the download carries: for trying credgw out only.)")
	}
	anchors, err := server.ReadCertificateFiles(files)
	if err != nil {
		return nil, fmt.Errorf("--trust-anchor: %w", err)
	}
	return anchors, nil
}

// secretInput reads a secret from a file (given with flag), or from the
// terminal without echo.
func secretInput(flag, file, prompt string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flag, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", fmt.Errorf("no terminal to ask %q: give it in a file (%s)", strings.TrimSpace(prompt), flag)
	}
	fmt.Fprint(os.Stderr, prompt)
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	return string(b), err
}

// newKeystorePIN reads the keystore PIN from a file, or asks it on the
// terminal twice (without echo) until both entries agree.
func newKeystorePIN(file string) (string, error) {
	if file != "" {
		return secretInput("--keystore-pin-file", file, "")
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", errors.New("no terminal to ask the keystore PIN: give it in a file (--keystore-pin-file)")
	}
	return askNewPIN(func(prompt string) (string, error) { return secretInput("--keystore-pin-file", "", prompt) }, os.Stderr)
}

// newPINTries is how often askNewPIN asks before it gives up.
const newPINTries = 3

// askNewPIN asks a new keystore PIN and its confirmation; a PIN the agent
// would refuse, or a confirmation that differs, is asked again. Messages go
// to w and never carry the PIN.
func askNewPIN(ask func(prompt string) (string, error), w io.Writer) (string, error) {
	for range newPINTries {
		pin, err := ask("Choose a keystore PIN (at least 6 characters): ")
		if err != nil {
			return "", err
		}
		if err := agent.CheckKeystorePIN(pin); err != nil {
			fmt.Fprintf(w, "%s; choose another\n", strings.TrimPrefix(err.Error(), "agent: "))
			continue
		}
		again, err := ask("Type the keystore PIN again: ")
		if err != nil {
			return "", err
		}
		if again != pin {
			fmt.Fprintln(w, "the two entries differ; choose the keystore PIN again")
			continue
		}
		return pin, nil
	}
	return "", fmt.Errorf("no keystore PIN chosen after %d tries (the entries differed or the PIN was refused); nothing was downloaded", newPINTries)
}

// progressPrinter shows a progress bar on a terminal, plain lines otherwise.
func progressPrinter(w io.Writer) func(agent.Event) {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	var bar *progressbar.ProgressBar
	lastPct := -1
	return func(e agent.Event) {
		switch {
		case e.TotalBytes > 0:
			if tty {
				if bar == nil {
					bar = progressbar.NewOptions64(e.TotalBytes, progressbar.OptionSetWriter(w),
						progressbar.OptionSetDescription("downloading (this could take some time, don't close the app)"),
						progressbar.OptionShowBytes(true))
				}
				bar.Set64(e.Bytes)
				return
			}
			if pct := int(e.Bytes * 100 / e.TotalBytes); pct/25 != lastPct/25 || e.Bytes == e.TotalBytes {
				lastPct = pct
				fmt.Fprintf(w, "downloading: %d of %d bytes (%d%%)\n", e.Bytes, e.TotalBytes, pct)
			}
		case e.Resumed:
			fmt.Fprintln(w, terminalSafe(e.Message))
		case e.Total > 0:
			// The gateway's progress text: printed without control
			// characters, as everything that may carry its words.
			fmt.Fprintf(w, "%s (%d/%d)\n", terminalSafe(e.Message), e.Current, e.Total)
		case e.Message != "":
			// What the agent says on its own (waits, retries, leftovers),
			// which may quote the gateway's status messages.
			fmt.Fprintln(w, terminalSafe(e.Message))
		}
	}
}

func printCertificates(w io.Writer, res *agent.Result) {
	for _, p := range []credgwv1.Profile{credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE, credgwv1.Profile_PROFILE_KEY_MANAGEMENT} {
		c := res.Certificates[p]
		if c == nil {
			continue
		}
		var pol []string
		for _, o := range c.Policies {
			pol = append(pol, o.String())
		}
		what := map[credgwv1.Profile]string{
			credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH:  "derived PIV authentication (sign-in)",
			credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE: "S/MIME signing",
			credgwv1.Profile_PROFILE_KEY_MANAGEMENT:    "S/MIME encryption, escrowed key" + earlierKeys(res.KeyHistory-1),
		}[p]
		fmt.Fprintf(w, "  %s\n    subject %s\n    policy %s, serial %s\n    valid %s .. %s\n", what, terminalSafe(c.Subject.String()),
			strings.Join(pol, ","), fmtSerial(c.SerialNumber.Text(16)), fmtTime(c.NotBefore), fmtTime(c.NotAfter))
	}
}

// earlierKeys says what key history came with the escrowed key.
func earlierKeys(n int) string {
	switch {
	case n <= 0:
		return " (no earlier keys)"
	case n == 1:
		return " + 1 earlier key (key history), all in encryption.p12 and one file each"
	}
	return fmt.Sprintf(" + %d earlier keys (key history), all in encryption.p12 and one file each", n)
}

// readPayloadFile reads a QR payload from a file, or from in for "-": the
// first line, without the line end. The payload holds the activation
// secret, so it is kept off the command line.
func readPayloadFile(in io.Reader, name string) (string, error) {
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(io.LimitReader(in, 8<<10))
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return "", fmt.Errorf("--qr-payload-file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}
