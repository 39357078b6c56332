package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newHSMSimCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hsm-sim",
		Short: "Simulated PIV cards and card issuer on SoftHSM, for tests and demos",
		Long: `hsm-sim makes a self-contained environment in a directory: its own
softhsm2.conf and token directory (never the system's), a simulated PIV card
issuer (root CA and PIV card issuing CA) with an OCSP responder and CRLs, and
simulated PIV cards, good or with one defect each.

Use the environment's SoftHSM from other programs with
  SOFTHSM2_CONF=DIR/softhsm2.conf`,
	}
	card := &cobra.Command{Use: "card", Short: "Make, revoke and list simulated PIV cards"}
	card.AddCommand(newHSMSimCardNewCmd(), newHSMSimCardRevokeCmd(), newHSMSimCardListCmd(), newHSMSimCardInsertCmd())
	cmd.AddCommand(newHSMSimInitCmd(), newHSMSimServeCmd(), card)
	return cmd
}

func newHSMSimInitCmd() *cobra.Command {
	var dir, baseURL string
	cmd := &cobra.Command{
		Use:   "init --dir DIR --url http://127.0.0.1:PORT",
		Short: "Create an hsm-sim environment",
		Long: `Create an hsm-sim environment in DIR (new or empty). --url is the base URL
the cards' AIA (OCSP, caIssuers) and CRL distribution points carry, and where
'hsm-sim serve' listens.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := hsmsim.Init(dir, baseURL)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "hsm-sim environment in %s\n", env.Dir)
			fmt.Fprintf(out, "  PIV trust anchor:  %s\n", filepath.Join(env.Dir, "issuer/piv-ca/root.crt"))
			fmt.Fprintf(out, "  issuing CA:        %s\n", filepath.Join(env.Dir, "issuer/piv-ca/ca.crt"))
			fmt.Fprintf(out, "  OCSP responder:    %s (run: credgw hsm-sim serve --dir %s)\n", env.OCSPURL(), dir)
			fmt.Fprintf(out, "  SoftHSM config:    SOFTHSM2_CONF=%s\n", env.SoftHSMConfig())
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "environment directory (required)")
	cmd.Flags().StringVar(&baseURL, "url", "", "base URL of the simulated issuer, http://127.0.0.1:PORT (required)")
	cmd.MarkFlagRequired("dir")
	cmd.MarkFlagRequired("url")
	return cmd
}

func newHSMSimServeCmd() *cobra.Command {
	var dir, listen string
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "Serve the simulated issuer's OCSP responder, CRLs and CA certificates",
		Long: `Serve, at the environment's --url, the simulated issuer's OCSP responder
(RFC 6960, GET and POST at /ocsp), CRLs (/crl/piv-ca.crl) and CA certificates
(/certs/piv-ca.p7c, /certs/piv-ca.crt, /certs/piv-ca-root.crt). Revocations
made with 'hsm-sim card revoke' show at once. Stops on SIGINT or SIGTERM.
A listening socket passed by socket activation (LISTEN_FDS, named "hsm" in
LISTEN_FDNAMES) is served instead of binding the address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := hsmsim.Load(dir)
			if err != nil {
				return err
			}
			if listen == "" {
				u, err := url.Parse(env.BaseURL)
				if err != nil {
					return err
				}
				listen = u.Host
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
			// A socket passed in (socket activation, named "hsm") is
			// served as it is; else the address is bound.
			inherited, err := server.InheritedListeners("hsm")
			if err != nil {
				return err
			}
			ln, ok := inherited["hsm"]
			if !ok {
				if ln, err = net.Listen("tcp", listen); err != nil {
					return fmt.Errorf("listen on %s: %w", listen, err)
				}
			}
			srv := &http.Server{Handler: env.Handler(log), ReadHeaderTimeout: 10 * time.Second}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			log.Info("hsm-sim serving", "addr", ln.Addr().String(), "dir", env.Dir)
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			log.Info("hsm-sim stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "environment directory (required)")
	cmd.Flags().StringVar(&listen, "listen", "", "listen address (default: host:port of the environment's --url)")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func newHSMSimCardNewCmd() *cobra.Command {
	var dir, name, pinFile, key, email, upn, variant, fascnID string
	var emailOnlyInSig bool
	cmd := &cobra.Command{
		Use:   "new --dir DIR --name NAME --pin-file FILE",
		Short: "Make a simulated PIV card (a SoftHSM token)",
		Long: `Make a simulated PIV card: a SoftHSM token labelled NAME holding keys generated
on the token for 9A (PIV Authentication), 9C (Digital Signature, PIN before
every use), 9D (Key Management) and 9E (Card Authentication, no PIN), and
certificates from the simulated issuer under OpenSC's CKA_IDs and labels.

Without --email the card has no Digital Signature or Key Management
certificate (FIPS 201-3: they are mandatory only with an email account).

Variants, each with exactly one defect in its PIV Authentication certificate:
  good            none
  revoked         revoked at the issuer (OCSP and CRL say so)
  expired         expired yesterday
  not-yet-valid   valid from tomorrow
  wrong-policy    asserts id-fpki-common-policy instead of ...3.13
  untrusted       issued by a CA that does not chain to the trust anchor
  wrong-key       certifies another key than the card's 9A key
  eku-server-auth   EKU serverAuth only (no client authentication)
  eku-code-signing  EKU codeSigning only
  eku-card-auth     EKU id-PIV-cardAuth only (the 9E profile)
  ku-cert-sign      keyUsage with keyCertSign on a non-CA leaf
  ku-crl-sign       keyUsage with cRLSign on a non-CA leaf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := hsmsim.Load(dir)
			if err != nil {
				return err
			}
			pin, err := (&pkcs11.URI{PINSource: pinFile}).PIN()
			if err != nil {
				return err
			}
			kt, err := pkcs11.ParseKeyType(key)
			if err != nil {
				return err
			}
			v, err := hsmsim.ParseVariant(variant)
			if err != nil {
				return err
			}
			mod, err := env.OpenModule()
			if err != nil {
				return err
			}
			defer mod.Close()
			info, err := env.NewCard(cmd.Context(), mod, hsmsim.CardSpec{
				Name: name, PIN: pin, Key: kt, Email: email, UPN: upn, Variant: v, FASCNIdentifier: fascnID,
				EmailOnlyInSignature: emailOnlyInSig,
			})
			if err != nil {
				return err
			}
			fascn, err := info.FASCNDecoded()
			if err != nil {
				return err
			}
			absPIN, _ := filepath.Abs(pinFile)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "card %q (%s, %s)\n", info.Name, info.Variant, info.KeyType)
			fmt.Fprintf(out, "  FASC-N:      %s (identifier %s)\n", fascn, fascn.Identifier())
			fmt.Fprintf(out, "  FASC-N hex:  %s\n", info.FASCN)
			fmt.Fprintf(out, "  card UUID:   %s\n", info.UUID)
			if info.Email != "" {
				fmt.Fprintf(out, "  email:       %s\n", info.Email)
			}
			fmt.Fprintf(out, "  PKCS#11 URI: %s\n", info.URI(mod.Path(), absPIN))
			fmt.Fprintf(out, "  environment: SOFTHSM2_CONF=%s\n", env.SoftHSMConfig())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "environment directory (required)")
	f.StringVar(&name, "name", "", "card name: token label and cardholder CN, at most 32 bytes (required)")
	f.StringVar(&pinFile, "pin-file", "", "file holding the card PIN, 6-8 digits (required)")
	f.StringVar(&key, "key", "p256", "key type of the card's keys: p256, p384, rsa2048")
	f.StringVar(&email, "email", "", "cardholder email (rfc822Name)")
	f.BoolVar(&emailOnlyInSig, "email-only-in-signature", false, "keep the email out of the PIV Authentication certificate (only 9C carries it)")
	f.StringVar(&upn, "upn", "", "cardholder UPN (otherName in the PIV Authentication certificate)")
	f.StringVar(&variant, "variant", "good", "good, revoked, expired, not-yet-valid, wrong-policy, untrusted, wrong-key, eku-server-auth, eku-code-signing, eku-card-auth, ku-cert-sign or ku-crl-sign")
	f.StringVar(&fascnID, "fascn-id", "", "14-digit FASC-N identifier (agency+system+credential number) to simulate a re-issued card; default random")
	for _, r := range []string{"dir", "name", "pin-file"} {
		cmd.MarkFlagRequired(r)
	}
	return cmd
}

func newHSMSimCardRevokeCmd() *cobra.Command {
	var dir, name, reason string
	cmd := &cobra.Command{
		Use:   "revoke --dir DIR --name NAME",
		Short: "Revoke a simulated card's certificates at the simulated issuer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := issuance.ParseRevocationReason(reason)
			if err != nil || !r.EndEntity() || r == issuance.ReasonPrivilegeWithdrawn {
				return fmt.Errorf("--reason %q: use unspecified, key-compromise, affiliation-changed, superseded or cessation-of-operation", reason)
			}
			env, err := hsmsim.Load(dir)
			if err != nil {
				return err
			}
			if err := env.RevokeCard(name, int(r)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "card %q revoked (%s)\n", name, reason)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "environment directory (required)")
	cmd.Flags().StringVar(&name, "name", "", "card name (required)")
	cmd.Flags().StringVar(&reason, "reason", "key-compromise", "revocation reason")
	cmd.MarkFlagRequired("dir")
	cmd.MarkFlagRequired("name")
	return cmd
}

func newHSMSimCardListCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "list --dir DIR",
		Short: "List the simulated cards",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := hsmsim.Load(dir)
			if err != nil {
				return err
			}
			cards, err := env.Cards()
			if err != nil {
				return err
			}
			sort.Slice(cards, func(i, j int) bool { return cards[i].Name < cards[j].Name })
			for _, c := range cards {
				fmt.Fprintf(cmd.OutOrStdout(), "%-24s %-14s %-8s %s\n", c.Name, c.Variant, c.KeyType, c.UUID)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "environment directory (required)")
	cmd.MarkFlagRequired("dir")
	return cmd
}

func newHSMSimCardInsertCmd() *cobra.Command {
	var dir, name, host string
	var port, tries int
	cmd := &cobra.Command{
		Use:   "insert --dir DIR --name NAME [--vpcd-port PORT]",
		Short: "Present a simulated card to PC/SC through vsmartcard's vpcd reader",
		Long: `Present the simulated card NAME as a PIV card (SP 800-73-4 card edge) in the
virtual reader of vsmartcard's vpcd driver, loaded by a running pcscd, until
interrupted: stopping the command removes the card. Middleware such as
OpenSC's PIV driver (opensc-pkcs11.so) then reads its certificates, verifies
its PIN and signs with its keys, which stay on the card's SoftHSM token.

vpcd listens on --vpcd-port (35963 in Debian's /etc/reader.conf.d/vpcd) and
this command connects to it on --vpcd-host (127.0.0.1). The PIN retry
counter (--pin-tries) is kept in the card's directory: a card blocked by
wrong PINs stays blocked when inserted again. See docs/piv-middleware.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := hsmsim.Load(dir)
			if err != nil {
				return err
			}
			mod, err := env.OpenModule()
			if err != nil {
				return err
			}
			defer mod.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			card, err := env.OpenPIVCard(ctx, mod, name, hsmsim.PIVCardOptions{PINTries: tries})
			if err != nil {
				return err
			}
			defer card.Close()
			log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
			addr := net.JoinHostPort(host, strconv.Itoa(port))
			log.Info("presenting card to vpcd", "card", name, "vpcd", addr, "pin_tries_left", card.TriesLeft())
			return hsmsim.InsertVPCD(ctx, addr, card, log, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "environment directory (required)")
	f.StringVar(&name, "name", "", "card name (required)")
	f.StringVar(&host, "vpcd-host", "127.0.0.1", "host where vpcd listens")
	f.IntVar(&port, "vpcd-port", hsmsim.DefaultVPCDPort, "port where vpcd listens")
	f.IntVar(&tries, "pin-tries", hsmsim.DefaultPINTries, "PIN retry counter's reset value")
	cmd.MarkFlagRequired("dir")
	cmd.MarkFlagRequired("name")
	return cmd
}
