package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The issuing CA"}
	cmd.AddCommand(newCAInitCmd(), newCAImportCmd(), newCARootCRLCmd())
	return cmd
}

func newCAInitCmd() *cobra.Command {
	var cfgPath string
	var o server.InitCAOptions
	initCmd := &cobra.Command{
		Use:   "init --config credgw.yaml [--csr-out FILE]",
		Short: "Create the issuing CA key, and a development root or a CSR for the agency's root",
		Long: `With --csr-out (a real deployment): generate the issuing CA key in the HSM token
of ca.key_uri (sensitive, non-extractable; key type ca.key_type: p256, p384 or
rsa3072) and write a CSR for it to FILE, for the agency's root to sign; then
install what it signed with 'credgw ca import'. No root is made. Run again
before the import, it writes a new CSR for the key already in the token; once
a certificate is installed it refuses (keep the CSR for renewals).

Without --csr-out (development): also create a self-made root CA; the root key
is written beside the root certificate (0600) so that it can be moved offline,
and the root's first CRL goes to ca.root_crl_file. The certificates go to
ca.certificate_file and ca.chain_files[0]; the issuing CA certificate's CRL DP
and AIA point at the root CRL and certificate the gateway serves under
ca.base_url.

Names not given by flags get a key-derived suffix ("credgw Derived PIV
Issuing CA 3f9a"), so that two environments never share a CA name. The escrow
key-encryption key is created in the HSM (escrow.kek_uri) or as
escrow.kek_file. An existing CA is never replaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := server.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			res, err := server.InitCA(cmd.Context(), cfg, o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if res.CSR != nil {
				how := "generated"
				if res.ReusedKey {
					how = "already in the token"
				}
				fmt.Fprintf(out, "issuing CA key: %s (%s)\nCSR:            %s for %s\n", keyPlace(cfg), how, o.CSRFile, res.CSR.Subject)
				fmt.Fprintf(out, "Have the agency's root sign it (docs/key-ceremony.md), then run\n  credgw ca import --config %s --certificate ISSUING.crt --chain ROOT-CHAIN.pem\n", cfgPath)
				return nil
			}
			fmt.Fprintf(out, "root CA:    %s\n", res.Root.Subject)
			fmt.Fprintf(out, "root cert:  %s (what devices trust: credgw redeem --trust-anchor)\n", cfg.Path(cfg.CA.ChainFiles[0]))
			fmt.Fprintf(out, "issuing CA: %s (key %s)\n", res.Issuing.Subject, keyPlace(cfg))
			if res.RootKeyFile != "" {
				fmt.Fprintf(out, "root key:   %s — move it offline\n", res.RootKeyFile)
			}
			fmt.Fprintf(out, "root CRL:   %s (renew with credgw ca root-crl)\n", res.RootCRLFile)
			return nil
		},
	}
	f := initCmd.Flags()
	f.StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	f.StringVar(&o.Organization, "organization", "credgw", "organization (O) in the CA subjects")
	f.StringVar(&o.Country, "country", "US", "country (C) in the CA subjects")
	f.StringVar(&o.IssuingName, "issuing-name", "", "issuing CA common name (default: a name with a key-derived suffix)")
	f.StringVar(&o.RootName, "root-name", "", "development root CA common name (default: a name with a key-derived suffix)")
	f.StringVar(&o.CSRFile, "csr-out", "", "make only the issuing key and write a PEM CSR for the agency's root here")
	return initCmd
}

func newCAImportCmd() *cobra.Command {
	var cfgPath, certFile, chainFile string
	c := &cobra.Command{
		Use:   "import --config credgw.yaml --certificate FILE --chain FILE",
		Short: "Install the issuing CA certificate the agency's root signed",
		Long: `Check the issuing CA certificate the root operator signed for the CSR of
'credgw ca init --csr-out' and install it with its chain (PEM, the issuer first,
the root last) at ca.certificate_file and ca.chain_files, for 'credgw serve'.

It must be for the HSM key of ca.key_uri, a CA certificate with pathLen 0,
keyUsage keyCertSign and cRLSign, certificate policies that include those
credgw issues under (or anyPolicy), an http AIA caIssuers URL and an http CRL
distribution point, chain to the given root, and be valid for at least
ca.validity from now. A refusal says what to ask the root operator for.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := server.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			certPEM, err := os.ReadFile(certFile)
			if err != nil {
				return err
			}
			chainPEM, err := os.ReadFile(chainFile)
			if err != nil {
				return err
			}
			cert, warns, err := server.ImportCA(cmd.Context(), cfg, certPEM, chainPEM, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, w := range warns {
				fmt.Fprintf(out, "warning: %s\n", w)
			}
			fmt.Fprintf(out, "issuing CA: %s\n  issuer:   %s\n  valid to: %s\ninstalled at %s; restart credgw serve\n",
				cert.Subject, cert.Issuer, cert.NotAfter.UTC().Format(time.RFC3339), cfg.Path(cfg.CA.CertificateFile))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	f.StringVar(&certFile, "certificate", "", "the issuing CA certificate, PEM (required)")
	f.StringVar(&chainFile, "chain", "", "its chain up to the root, PEM, root last (required)")
	c.MarkFlagRequired("certificate")
	c.MarkFlagRequired("chain")
	return c
}

func newCARootCRLCmd() *cobra.Command {
	var keyFile, certFile, outFile, prevFile, next string
	var revoke []string
	c := &cobra.Command{
		Use:   "root-crl --root-key FILE --root-cert FILE --out FILE [--next-update 30d]",
		Short: "Sign the root's CRL with the offline root key (a ceremony command)",
		Long: `Sign the development root's CRL with its key file: run it at the ceremony on
the offline machine that holds the root key, never on the gateway host, then
copy the CRL (DER) to ca.root_crl_file on every gateway; they serve it at
/crl/root.crl, the issuing CA certificate's CRL distribution point, and pick
up a new file without a restart. Sign a new one before --next-update passes.
--previous keeps the last CRL's entries; --revoke SERIAL[:REASON] adds one
(hex serial, RFC 5280 reason code for a CA certificate: 0-5 or 9, e.g.
1a2b:5 for cessationOfOperation, 1a2b:2 for cACompromise).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := issuance.ReadKeyFile(keyFile)
			if err != nil {
				return err
			}
			root, err := readOneCert(certFile)
			if err != nil {
				return err
			}
			nu, err := parseDays(next)
			if err != nil {
				return fmt.Errorf("--next-update: %w", err)
			}
			o := issuance.RootCRLOptions{Root: root, Key: key, NextUpdate: nu, Now: time.Now()}
			if prevFile != "" {
				b, err := os.ReadFile(prevFile)
				if err != nil {
					return err
				}
				if blk, _ := pem.Decode(b); blk != nil {
					b = blk.Bytes
				}
				if o.Previous, err = x509.ParseRevocationList(b); err != nil {
					return fmt.Errorf("--previous: %w", err)
				}
			}
			for _, r := range revoke {
				s, code, _ := strings.Cut(r, ":")
				n, ok := new(big.Int).SetString(strings.ReplaceAll(s, ":", ""), 16)
				if !ok {
					return fmt.Errorf("--revoke %q: a hex serial", r)
				}
				e := x509.RevocationListEntry{SerialNumber: n}
				if code != "" {
					if e.ReasonCode, err = strconv.Atoi(code); err != nil {
						return fmt.Errorf("--revoke %q: the reason is an RFC 5280 code", r)
					}
				}
				o.Revoke = append(o.Revoke, e)
			}
			der, err := issuance.SignRootCRL(o)
			if err != nil {
				return err
			}
			// A new file in place of the old one at once: a gateway
			// reading ca.root_crl_file never sees half a CRL.
			tmp := outFile + ".new"
			if err := os.WriteFile(tmp, der, 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp, outFile); err != nil {
				return err
			}
			crl, _ := x509.ParseRevocationList(der)
			fmt.Fprintf(cmd.OutOrStdout(), "root CRL %s: number %s, %d revoked, next update %s\n",
				outFile, crl.Number, len(crl.RevokedCertificateEntries), crl.NextUpdate.UTC().Format(time.RFC3339))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&keyFile, "root-key", "", "the root's PKCS#8 PEM key file, 0600 (required)")
	f.StringVar(&certFile, "root-cert", "", "the root certificate, PEM (required)")
	f.StringVar(&outFile, "out", "", "where the DER CRL goes (required)")
	f.StringVar(&next, "next-update", "30d", "how long the CRL is good for (e.g. 30d, 720h)")
	f.StringVar(&prevFile, "previous", "", "the root's previous CRL, to keep its entries")
	f.StringSliceVar(&revoke, "revoke", nil, "revoke a certificate the root issued: SERIAL[:REASON]")
	for _, n := range []string{"root-key", "root-cert", "out"} {
		c.MarkFlagRequired(n)
	}
	return c
}

func readOneCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// parseDays reads a Go duration or a number of days ("30d").
func parseDays(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%q: a positive number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d <= 0 {
		err = fmt.Errorf("%q: positive", s)
	}
	return d, err
}

// keyPlace says where the issuing key is, without the PIN a ca.key_uri
// may carry (pin-value=): the output goes into ceremony transcripts.
func keyPlace(cfg *server.Config) string {
	if cfg.CA.KeyURI != "" {
		u, err := pkcs11.ParseURI(cfg.CA.KeyURI)
		if err != nil {
			return "in the HSM (ca.key_uri)"
		}
		return "in the HSM: " + u.String()
	}
	return cfg.Path(cfg.CA.KeyFile)
}
