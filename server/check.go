package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CheckConfig is `credgw config check`: what `serve` checks before it
// serves, without serving, and every problem rather than the first. It
// reads the file and validates every field; reads every file the config
// names (certificates parse, TLS keys match their certificates, secrets
// have their form); opens the HSM tokens (module, PIN, the CA key and the
// escrow KEK found, the CA key matching the CA certificate); and reaches
// the store, read-only and without migrating, so it can run beside a
// running gateway before a restart. No problem: an empty list.
func CheckConfig(ctx context.Context, path string) []error {
	b, err := os.ReadFile(path)
	if err != nil {
		return []error{fmt.Errorf("config: %w", err)}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return []error{err}
	}
	cfg, err := decodeConfig(b, filepath.Dir(abs))
	if err != nil {
		return []error{err}
	}
	var problems []error
	if err := credentialsDirectoryUnset(b); err != nil {
		problems = append(problems, err)
	}
	if err := cfg.secretConfigMode(path); err != nil {
		problems = append(problems, err)
	}
	if err := cfg.validate(); err != nil {
		problems = append(problems, unjoin(err)...)
	}
	if err := cfg.checkNotifications(); err != nil {
		problems = append(problems, err)
	}
	problems = append(problems, cfg.checkFiles()...)
	problems = append(problems, cfg.checkHSM(ctx)...)
	problems = append(problems, cfg.checkStore(ctx)...)
	return problems
}

// checkNotifications: a gateway that issues (a ca section) delivers
// escrowed encryption keys (the mobile-smart-credential type has one),
// which it does only where every attempt is told to the person (Common
// Policy §4.12.1): with no sender, serve starts but refuses every
// enrollment.
func (c *Config) checkNotifications() error {
	if c.CA.CertificateFile == "" || c.Notify.SMTP.Address != "" || c.Notify.Webhook.URL != "" || c.Notify.File != "" {
		return nil
	}
	return errors.New("notifications: no sender (smtp, webhook or file): escrowed encryption keys are delivered only where every attempt " +
		"is told to the person (Common Policy §4.12.1), so serve would refuse every enrollment; configure notifications.smtp (the person's " +
		"email of record), notifications.webhook, or notifications.file (see docs/config.md)")
}

// unjoin lists the errors errors.Join made one.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// checkFiles reads every file the config names, as serve would.
func (c *Config) checkFiles() []error {
	var errs []error
	keyPair := func(field, keyField, cert, key string) *tls.Certificate {
		if cert == "" || key == "" {
			return nil // the field checks said so
		}
		kp, err := loadKeyPair(c.Path(cert), c.Path(key), keyField)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			return nil
		}
		return &kp
	}
	certs := func(field string, files ...string) {
		for _, f := range files {
			if f == "" {
				continue
			}
			if _, err := readCerts([]string{c.Path(f)}); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", field, err))
			}
		}
	}
	if kp := keyPair("tls.cert_file and tls.key_file", "tls.key_file", c.TLS.CertFile, c.TLS.KeyFile); kp != nil {
		if err := c.checkTLSAnchor(kp); err != nil {
			errs = append(errs, err)
		}
	}
	certs("tls.client_ca_files", c.TLS.ClientCAFiles...)
	if len(c.TLS.ClientCRLFiles) > 0 {
		if cas, err := readCerts(paths(c, c.TLS.ClientCAFiles)); err == nil {
			if _, _, err := readClientCRLs(paths(c, c.TLS.ClientCRLFiles), cas, time.Now()); err != nil {
				errs = append(errs, fmt.Errorf("tls.client_crl_files: %w", err))
			}
		}
	}
	certs("piv.trust_anchor_files", c.PIV.TrustAnchorFiles...)
	certs("piv.intermediate_files", c.PIV.IntermediateFiles...)
	if c.CA.CertificateFile != "" {
		if _, err := os.Stat(c.Path(c.CA.CertificateFile)); errors.Is(err, fs.ErrNotExist) {
			// Between 'ca init --csr-out' and 'ca import', or before
			// either: say which comes next.
			errs = append(errs, fmt.Errorf("ca.certificate_file: %w: make the issuing CA first: credgw ca init (development), or ca init --csr-out and, once the agency's root signed the CSR, credgw ca import (docs/key-ceremony.md)", err))
		} else {
			certs("ca.certificate_file", c.CA.CertificateFile)
		}
		certs("ca.chain_files", c.CA.ChainFiles...)
		if len(c.CA.PreviousCertificateFiles) > 0 {
			if chain, err := readCerts(paths(c, append([]string{c.CA.CertificateFile}, c.CA.ChainFiles...))); err == nil && len(chain) > 0 {
				if _, err := previousCAs("ca.previous_certificate_files", paths(c, c.CA.PreviousCertificateFiles), chain); err != nil {
					errs = append(errs, err)
				}
			}
		}
		certs("enrollment.tls_anchor_file", c.Enroll.TLSAnchorFile)
		if c.CA.RootCRLFile != "" {
			if _, err := os.Stat(c.Path(c.CA.RootCRLFile)); err != nil {
				errs = append(errs, fmt.Errorf("ca.root_crl_file: %w", err))
			}
		}
	}
	if c.Portal.CSRFKeyFile != "" {
		if _, err := portalCSRFKey(c); err != nil {
			errs = append(errs, err) // it names the field
		}
	}
	// The notification secrets, as serve reads them (notify.New).
	if f := c.Notify.SMTP.PasswordFile; f != "" && c.Notify.SMTP.Address != "" {
		if _, err := notify.ReadSecretFile(c.Path(f), "notifications.smtp.password_file"); err != nil {
			errs = append(errs, err)
		}
	}
	if f := c.Notify.Webhook.SecretFile; f != "" && c.Notify.Webhook.URL != "" {
		if _, err := notify.ReadKeyFile(c.Path(f), "notifications.webhook.secret_file"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Webhook.SecretFile != "" {
		if _, err := loadWebhookKey(c); err != nil {
			errs = append(errs, err)
		}
	}
	keyPair("termination_webhook.tls_cert_file and tls_key_file", "termination_webhook.tls_key_file", c.Webhook.TLSCertFile, c.Webhook.TLSKeyFile)
	if c.CA.CertificateFile != "" {
		if _, err := c.AttestPolicy(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// checkHSM opens what the CA needs: the issuing key (matching the CA
// certificate) and the escrow KEK.
func (c *Config) checkHSM(ctx context.Context) []error {
	if c.CA.CertificateFile == "" || (c.CA.KeyURI == "" && c.CA.KeyFile == "") {
		return nil
	}
	h := newHSM(c)
	defer h.close()
	var errs []error
	signer, _, _, err := h.caKey(ctx)
	if err != nil {
		errs = append(errs, err)
	} else if certs, err := readCerts([]string{c.Path(c.CA.CertificateFile)}); err == nil {
		pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(certs[0].PublicKey) {
			errs = append(errs, fmt.Errorf("ca: the CA key does not match ca.certificate_file (%s): check ca.key_uri or ca.key_file", certs[0].Subject))
		}
	}
	if c.Escrow.KEKURI != "" || c.Escrow.KEKFile != "" {
		if _, _, err := h.kek(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// The retired keys as serve loads them: certificate under the root,
	// key matching it.
	if len(c.CA.Retired) > 0 {
		if chain, err := readCerts(paths(c, append([]string{c.CA.CertificateFile}, c.CA.ChainFiles...))); err == nil && len(chain) > 0 {
			if _, err := retiredKeys(ctx, c, h, chain); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// checkStore reaches the database read-only. A SQLite file that is not
// there (or is empty), or that a newer credgw migrated, is refused as
// serve refuses it.
func (c *Config) checkStore(ctx context.Context) []error {
	if c.Store.Driver == "sqlite" {
		p := c.Path(c.Store.DSN)
		if fi, err := os.Stat(p); errors.Is(err, os.ErrNotExist) || err == nil && fi.Size() == 0 {
			what := "does not exist"
			if err == nil {
				what = "is empty"
			}
			return []error{noSQLiteDatabase(fmt.Errorf("%w: %s %s", store.ErrNoDatabase, p, what))}
		}
	}
	st, err := OpenStoreReadOnly(ctx, c)
	if err != nil {
		return []error{storeError(err)}
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		return []error{storeError(err)}
	}
	if c.Store.Driver == "sqlite" {
		if err := notNewerSQLite(ctx, st, c.Path(c.Store.DSN)); err != nil {
			return []error{err}
		}
	}
	return c.checkIssuers(ctx, st)
}

// checkIssuers is what serve logs at start as errors (CA.CheckIssuers),
// from the CA certificates configured: the store's unexpired certificates
// under each issuer name against the key configured under it (ca.name,
// ca.retired). A re-key is checked before the restart, not after.
func (c *Config) checkIssuers(ctx context.Context, st issuance.IssuerLister) []error {
	if c.CA.CertificateFile == "" {
		return nil
	}
	cas := map[string]*x509.Certificate{}
	read := func(name, file string) bool {
		certs, err := readCerts([]string{c.Path(file)})
		if err != nil || len(certs) == 0 {
			return false // the file checks said so
		}
		cas[name] = certs[0]
		return true
	}
	if !read(c.CA.Name, c.CA.CertificateFile) {
		return nil
	}
	for _, r := range c.CA.Retired {
		if !read(r.Name, r.CertificateFile) {
			return nil
		}
	}
	problems, err := issuance.CheckIssuers(ctx, st, time.Now(), cas)
	if err != nil {
		return []error{storeError(err)}
	}
	var errs []error
	for _, p := range problems {
		errs = append(errs, errors.New("ca: certificates whose status no configured key can answer: "+p))
	}
	return errs
}

// storeError names the store in an error that does not already.
func storeError(err error) error {
	if strings.HasPrefix(err.Error(), "store:") {
		return err
	}
	return fmt.Errorf("store: %w", err)
}
