package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// hsm opens PKCS#11 tokens for the CA key and the escrow KEK, once each.
type hsm struct {
	cfg    *Config
	tokens map[string]*pkcs11.Token
	// refused remembers a token whose PIN login failed, by token and
	// PIN source: a second URI on the same token (the CA key and the
	// escrow KEK) must not spend a second of the few wrong PINs a real
	// HSM counts before it locks.
	refused map[string]error
	open    func(context.Context, *pkcs11.URI, string) (*pkcs11.Token, error)
}

func newHSM(cfg *Config) *hsm {
	return &hsm{cfg: cfg, tokens: map[string]*pkcs11.Token{}, refused: map[string]error{}, open: pkcs11.OpenURI}
}

// parseKeyURI reads a pkcs11: URI from the config, resolving a relative
// pin-source against the config file's directory.
func (h *hsm) parseKeyURI(field, s string) (*pkcs11.URI, error) {
	u, err := pkcs11.ParseURI(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if len(u.ID) == 0 {
		return nil, fmt.Errorf("%s: give the key's id= (CKA_ID)", field)
	}
	if u.PINSource != "" {
		u.PINSource = h.cfg.Path(u.PINSource)
		// The secret-file rule of every other secret (group read only
		// for the gateway's own group or an ACL), stricter than what the
		// pkcs11 package asks of any PIN file.
		if err := secretFileMode(u.PINSource, field+" pin-source"); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (h *hsm) token(ctx context.Context, u *pkcs11.URI) (*pkcs11.Token, error) {
	key := u.Token + "\x00" + u.Serial
	if t, ok := h.tokens[key]; ok {
		return t, nil
	}
	// By the PIN itself (pin-source's content or pin-value), hashed: two
	// URIs with different PINs are each tried.
	pinKey := key + "\x00" + u.PINSource
	if pin, err := u.PIN(); err == nil {
		sum := sha256.Sum256(pin)
		pinKey = key + "\x00" + hex.EncodeToString(sum[:])
	}
	if err, ok := h.refused[pinKey]; ok {
		return nil, fmt.Errorf("%w (not tried again with the same PIN)", err)
	}
	if h.cfg.HSM.SoftHSM2Conf != "" {
		conf := h.cfg.Path(h.cfg.HSM.SoftHSM2Conf)
		// SoftHSM says only CKR_GENERAL_ERROR without its file.
		if _, err := os.Stat(conf); err != nil {
			return nil, fmt.Errorf("hsm.softhsm2_conf: %w (a relative path is relative to the config file's folder)", err)
		}
		if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
			return nil, err
		}
	}
	module := h.cfg.HSM.Module
	if module == "" && u.ModulePath == "" {
		var err error
		if module, err = pkcs11.SoftHSMModule(); err != nil {
			return nil, fmt.Errorf("hsm.module is not set and %w", err)
		}
	}
	t, err := h.open(ctx, u, module)
	if errors.Is(err, pkcs11.ErrPINIncorrect) || errors.Is(err, pkcs11.ErrPINLocked) {
		h.refused[pinKey] = err
	}
	if err != nil {
		return nil, err
	}
	h.tokens[key] = t
	return t, nil
}

func (h *hsm) close() {
	for _, t := range h.tokens {
		t.Close()
	}
}

// caKey returns the issuing CA's signer: from the HSM or a key file.
func (h *hsm) caKey(ctx context.Context) (crypto.Signer, *pkcs11.Token, []byte, error) {
	return h.signer(ctx, "ca", h.cfg.CA.KeyURI, h.cfg.CA.KeyFile)
}

// signer returns a CA key named by the config section field: keyURI in
// the HSM, or keyFile.
func (h *hsm) signer(ctx context.Context, field, keyURI, keyFile string) (crypto.Signer, *pkcs11.Token, []byte, error) {
	if keyFile != "" {
		if err := secretFileMode(h.cfg.Path(keyFile), field+".key_file"); err != nil {
			return nil, nil, nil, err
		}
		k, err := issuance.ReadKeyFile(h.cfg.Path(keyFile))
		return k, nil, nil, err
	}
	u, err := h.parseKeyURI(field+".key_uri", keyURI)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err := h.token(ctx, u)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s.key_uri: %w", field, err)
	}
	s, err := t.Signer(ctx, pkcs11.KeyRef{ID: u.ID, Label: u.Object})
	if err != nil {
		return nil, t, u.ID, fmt.Errorf("%s.key_uri: %w%s", field, err, h.notFoundHint(err))
	}
	return s, t, u.ID, nil
}

// retiredKey is an entry of ca.retired, read: its certificate and key.
type retiredKey struct {
	name   string
	cert   *x509.Certificate
	signer crypto.Signer
}

// retiredKeys reads ca.retired: each earlier key's certificate, under the
// root of chain, and its key, which must match it.
func retiredKeys(ctx context.Context, cfg *Config, h *hsm, chain []*x509.Certificate) ([]retiredKey, error) {
	var out []retiredKey
	for i, r := range cfg.CA.Retired {
		field := fmt.Sprintf("ca.retired[%d]", i)
		certs, err := previousCAs(field+".certificate_file", []string{cfg.Path(r.CertificateFile)}, chain)
		if err != nil {
			return nil, err
		}
		if len(certs) != 1 {
			return nil, fmt.Errorf("%s.certificate_file: %d certificates: give the earlier key's issuing CA certificate alone", field, len(certs))
		}
		signer, _, _, err := h.signer(ctx, field, r.KeyURI, r.KeyFile)
		if err != nil {
			return nil, err
		}
		if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(certs[0].PublicKey) {
			return nil, fmt.Errorf("%s: the key does not match its certificate %q: check key_uri or key_file", field, certs[0].Subject)
		}
		out = append(out, retiredKey{name: r.Name, cert: certs[0], signer: signer})
	}
	return out, nil
}

// retiredCAs loads ca.retired as status-only CAs, each under its name,
// configured as base otherwise.
func retiredCAs(ctx context.Context, cfg *Config, h *hsm, chain []*x509.Certificate, base issuance.Config) ([]*issuance.CA, error) {
	keys, err := retiredKeys(ctx, cfg, h, chain)
	if err != nil {
		return nil, err
	}
	var out []*issuance.CA
	for i, k := range keys {
		c := base
		c.Name, c.Chain, c.Signer, c.StatusOnly = k.name, append([]*x509.Certificate{k.cert}, chain[1:]...), k.signer, true
		c.Templates, c.Issued, c.LintRefused = nil, nil, nil
		ca, err := issuance.NewCA(c)
		if err != nil {
			return nil, fmt.Errorf("ca.retired[%d]: %w", i, err)
		}
		out = append(out, ca)
	}
	return out, nil
}

func (h *hsm) kek(ctx context.Context) (issuance.KEK, string, error) {
	if h.cfg.Escrow.KEKFile != "" {
		if err := secretFileMode(h.cfg.Path(h.cfg.Escrow.KEKFile), "escrow.kek_file"); err != nil {
			return nil, "", err
		}
		k, err := issuance.LoadFileKEK(h.cfg.Path(h.cfg.Escrow.KEKFile))
		return k, "file", err
	}
	u, err := h.parseKeyURI("escrow.kek_uri", h.cfg.Escrow.KEKURI)
	if err != nil {
		return nil, "", err
	}
	t, err := h.token(ctx, u)
	if err != nil {
		return nil, "", fmt.Errorf("escrow.kek_uri: %w", err)
	}
	k, err := t.AESKey(ctx, pkcs11.KeyRef{ID: u.ID, Label: u.Object})
	if err != nil {
		return nil, "", fmt.Errorf("escrow.kek_uri: %w%s", err, h.notFoundHint(err))
	}
	return k, u.Token + "/" + fmt.Sprintf("%x", u.ID), nil
}

// notFoundHint explains a key SoftHSM says is not there when this user
// cannot read the token's files (ca init run as root, the service as
// credgw): SoftHSM skips such files without a word.
func (h *hsm) notFoundHint(err error) string {
	if !errors.Is(err, pkcs11.ErrObjectNotFound) || h.cfg.HSM.SoftHSM2Conf == "" {
		return ""
	}
	return softHSMUnreadable(h.cfg.Path(h.cfg.HSM.SoftHSM2Conf))
}

// accessible reports whether this process may read and write a file
// (access(2)); a test replaces it.
var accessible = func(p string) error { return unix.Access(p, unix.R_OK|unix.W_OK) }

// softHSMUnreadable names the files under the token directory of a
// SoftHSM configuration that this process cannot read and write, with what
// to do; "" if there are none (or the directory is unknown).
func softHSMUnreadable(conf string) string {
	b, err := os.ReadFile(conf)
	if err != nil {
		return ""
	}
	var dir string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "directories.tokendir" {
			dir = strings.TrimSpace(v)
		}
	}
	if dir == "" {
		return ""
	}
	var bad []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if len(bad) >= 3 {
			return filepath.SkipAll
		}
		if err != nil {
			return nil
		}
		if accessible(p) != nil {
			bad = append(bad, p)
		}
		return nil
	})
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf("; this user (uid %d) cannot read and write SoftHSM's token files %s, and SoftHSM skips them: "+
		"the token must belong to the gateway's user (chown -R credgw:credgw %s, after running ca init as root)",
		os.Getuid(), strings.Join(bad, ", "), filepath.Clean(dir))
}

// loadCA loads the issuing CA (NewCA checks that the key matches the
// certificate: credgw refuses to start otherwise) and the escrow.
func loadCA(ctx context.Context, cfg *Config, h *hsm, st store.Store, opts options, m *metrics) (*issuance.CA, *issuance.Escrow, error) {
	certs, err := readCerts(paths(cfg, append([]string{cfg.CA.CertificateFile}, cfg.CA.ChainFiles...)))
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	signer, _, _, err := h.caKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	templates := map[issuance.Profile]string{}
	for name, text := range cfg.CA.Templates {
		p, err := issuance.ParseProfile(name)
		if err != nil {
			return nil, nil, fmt.Errorf("ca.templates: %w", err)
		}
		templates[p] = text
	}
	statusLog := map[string]*rate.Limiter{"crl": rate.NewLimiter(rate.Every(time.Minute), 1), "ocsp": rate.NewLimiter(rate.Every(time.Minute), 1)}
	caCfg := issuance.Config{
		Name: cfg.CA.Name, Chain: certs, Signer: signer, Store: st, BaseURL: cfg.CA.BaseURL,
		Validity: cfg.CA.Validity.Duration, HardwareBackedDevices: cfg.CA.HardwareBackedDevices,
		Templates: templates, Now: opts.now,
		Issued:       func(p issuance.Profile) { m.issued.WithLabelValues(string(p)).Inc() },
		LintRefused:  func(p issuance.Profile) { m.lintRefusals.WithLabelValues(string(p)).Inc() },
		Signed:       func(d time.Duration) { m.hsmSign.Observe(d.Seconds()) },
		OCSPTryLater: m.ocspTryLater.Inc,
		StatusUnavailable: func(kind string, err error) {
			m.statusUnavailable.WithLabelValues(kind).Inc()
			// One line a minute per kind: an outage is told, not a flood
			// (the counter has every request).
			if statusLog[kind] != nil && statusLog[kind].Allow() {
				opts.log.Error("could not answer a revocation status request: relying parties that check status refuse credentials meanwhile",
					"kind", kind, "cause", err.Error())
			}
		},
	}
	if caCfg.Retired, err = retiredCAs(ctx, cfg, h, certs, caCfg); err != nil {
		return nil, nil, err
	}
	ca, err := issuance.NewCA(caCfg)
	if err != nil {
		return nil, nil, err
	}
	kek, kekID, err := h.kek(ctx)
	if err != nil {
		return nil, nil, err
	}
	esc, err := issuance.NewEscrow(issuance.EscrowConfig{KEK: kek, KEKID: kekID, Store: st,
		KeyType: issuance.EscrowKeyType(cfg.Escrow.KeyType), PoolSize: cfg.Escrow.PoolSize, Now: opts.now,
		Log: opts.log, PoolFailed: func(error) { m.escrowPoolFailures.Inc() }})
	if err != nil {
		return nil, nil, err
	}
	return ca, esc, nil
}

// InitCAOptions are `credgw ca init`'s flags: the CA names (a name not
// given gets a key-derived suffix, unique per environment) and, for a CA
// the agency's root signs, where the CSR goes.
type InitCAOptions struct {
	Country, Organization string
	RootName, IssuingName string
	// CSRFile: make only the issuing key in the HSM and a CSR for it.
	CSRFile string
}

// InitCA is `credgw ca init`: it makes the root and issuing CA the config
// names, with the issuing key generated in the HSM token of ca.key_uri (or a
// key file), the root key in a file beside the root certificate, the root's
// first CRL at ca.root_crl_file, and the escrow KEK in the HSM when
// escrow.kek_uri names one. With CSRFile it makes the issuing key and a CSR
// instead, for the agency's root to sign (`credgw ca import` installs it).
func InitCA(ctx context.Context, cfg *Config, o InitCAOptions) (*issuance.InitResult, error) {
	if cfg.CA.CertificateFile == "" || len(cfg.CA.ChainFiles) == 0 {
		return nil, fmt.Errorf("ca init: the config needs ca.certificate_file and ca.chain_files (the root)")
	}
	// Never over an installed CA: its certificates and keys may carry the
	// config's names, which ca init's own directory check does not see.
	installed := []string{cfg.CA.CertificateFile, cfg.CA.KeyFile}
	if o.CSRFile == "" {
		installed = append(installed, cfg.CA.ChainFiles[0], cfg.CA.RootCRLFile)
	}
	for _, f := range installed {
		if f == "" {
			continue
		}
		if _, err := os.Lstat(cfg.Path(f)); err == nil {
			return nil, fmt.Errorf("ca init: %s exists already: a CA is installed, and ca init never replaces one (move its files away to start a new one; credgw ca import installs a CA made elsewhere)", cfg.Path(f))
		}
	}
	h := newHSM(cfg)
	defer h.close()
	opts := issuance.InitOptions{Dir: cfg.Path(dirOf(cfg.CA.CertificateFile)), Country: o.Country, Organization: o.Organization,
		RootName: o.RootName, IssuingName: o.IssuingName, KeyType: issuance.KeyAlgorithm(cfg.CA.KeyType),
		BaseURL: cfg.CA.BaseURL, CSRFile: o.CSRFile}
	if cfg.CA.KeyURI != "" {
		u, err := h.parseKeyURI("ca.key_uri", cfg.CA.KeyURI)
		if err != nil {
			return nil, err
		}
		t, err := h.token(ctx, u)
		if err != nil {
			return nil, err
		}
		opts.Token, opts.KeyID = t, u.ID
	}
	res, err := issuance.InitCA(ctx, opts)
	if err != nil {
		return nil, err
	}
	if res.IssuingKeyFile != "" && cfg.CA.KeyFile != "" {
		if err := placeCert(res.IssuingKeyFile, cfg.Path(cfg.CA.KeyFile)); err != nil {
			return nil, err
		}
	}
	if o.CSRFile == "" {
		if err := placeCert(res.IssuingFile, cfg.Path(cfg.CA.CertificateFile)); err != nil {
			return nil, err
		}
		if err := placeCert(res.RootFile, cfg.Path(cfg.CA.ChainFiles[0])); err != nil {
			return nil, err
		}
		if cfg.CA.RootCRLFile != "" {
			if err := placeCert(res.RootCRLFile, cfg.Path(cfg.CA.RootCRLFile)); err != nil {
				return nil, err
			}
			res.RootCRLFile = cfg.Path(cfg.CA.RootCRLFile)
		}
	}
	if err := initKEK(ctx, cfg, h); err != nil {
		return nil, err
	}
	return res, nil
}

// initKEK makes the escrow key-encryption key if it does not exist yet.
func initKEK(ctx context.Context, cfg *Config, h *hsm) error {
	switch {
	case cfg.Escrow.KEKURI != "":
		u, err := h.parseKeyURI("escrow.kek_uri", cfg.Escrow.KEKURI)
		if err != nil {
			return err
		}
		t, err := h.token(ctx, u)
		if err != nil {
			return err
		}
		if _, err := t.AESKey(ctx, pkcs11.KeyRef{ID: u.ID}); err != nil {
			if _, err := t.GenerateAESKey(ctx, pkcs11.KeyRef{ID: u.ID, Label: "credgw escrow KEK"}); err != nil {
				return fmt.Errorf("escrow KEK: %w", err)
			}
		}
	case cfg.Escrow.KEKFile != "":
		if _, err := os.Stat(cfg.Path(cfg.Escrow.KEKFile)); os.IsNotExist(err) {
			if err := issuance.WriteFileKEK(cfg.Path(cfg.Escrow.KEKFile)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ImportCA is `credgw ca import`: it checks the issuing CA certificate the
// agency's root signed for the HSM key, and its chain (issuer first, root
// last), against what credgw issues (issuance.CheckIssuingCA), then writes
// them where the config points (ca.certificate_file, ca.chain_files), 0644,
// so that `credgw serve` uses them. It returns the lint warnings.
func ImportCA(ctx context.Context, cfg *Config, certPEM, chainPEM []byte, now time.Time) (*x509.Certificate, []string, error) {
	if cfg.CA.CertificateFile == "" || len(cfg.CA.ChainFiles) == 0 {
		return nil, nil, fmt.Errorf("ca import: the config needs ca.certificate_file and ca.chain_files")
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("ca import: --certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("ca import: --certificate holds %d PEM certificates: give the issuing CA's alone", len(certs))
	}
	chain, err := parseCerts(chainPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("ca import: --chain: %w", err)
	}
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("ca import: --chain holds no PEM certificate: give the chain up to the root, root last")
	}
	if n := len(cfg.CA.ChainFiles); n != 1 && n != len(chain) {
		return nil, nil, fmt.Errorf("ca import: ca.chain_files lists %d files for a chain of %d certificates: list one file (the whole chain) or one per certificate", n, len(chain))
	}
	h := newHSM(cfg)
	defer h.close()
	signer, _, _, err := h.caKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	// The certificate in use, if any: a renewal must keep its subject.
	var installed *x509.Certificate
	if b, err := os.ReadFile(cfg.Path(cfg.CA.CertificateFile)); err == nil {
		if in, err := parseCerts(b); err == nil && len(in) > 0 {
			installed = in[0]
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("ca import: the certificate in use: %w", err)
	}
	if err := issuance.CheckIssuingCA(certs[0], chain, issuance.IssuingCARequirements{Key: signer.Public(),
		Validity: cfg.CA.Validity.Duration, HardwareBackedDevices: cfg.CA.HardwareBackedDevices, Now: now, Installed: installed}); err != nil {
		return nil, nil, err
	}
	_, lints, err := issuance.LintCACertificate(certs[0].Raw)
	if err != nil {
		return nil, nil, err
	}
	var warns []string
	for _, w := range lints {
		warns = append(warns, "zlint: "+w)
	}
	for _, c := range append(certs[:1:1], chain...) {
		if c.PermittedEmailAddresses != nil || c.ExcludedEmailAddresses != nil || c.PermittedURIDomains != nil || c.ExcludedURIDomains != nil ||
			c.PermittedDNSDomains != nil || c.ExcludedDNSDomains != nil || c.PermittedIPRanges != nil || c.ExcludedIPRanges != nil {
			// crypto/x509 refuses any URI without a host under a CA with
			// name constraints, whatever they constrain.
			warns = append(warns, fmt.Sprintf("%q has name constraints: credgw signs only certificates within them, but Go's crypto/x509, and so credgw's reference agent (credgw redeem, renew), refuses every certificate with a urn:uuid SAN under such a CA; check what your devices and relying parties run", c.Subject))
			break
		}
	}
	files := map[string][]byte{cfg.Path(cfg.CA.CertificateFile): pemCerts(certs)}
	if len(cfg.CA.ChainFiles) == 1 {
		files[cfg.Path(cfg.CA.ChainFiles[0])] = pemCerts(chain)
	} else {
		for i, f := range cfg.CA.ChainFiles {
			files[cfg.Path(f)] = pemCerts(chain[i : i+1])
		}
	}
	for path, b := range files {
		if err := writeFileAtomic(path, b, 0o644); err != nil {
			return nil, nil, fmt.Errorf("ca import: %w", err)
		}
	}
	return certs[0], warns, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

func pemCerts(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// writeFileAtomic replaces path with b: a reader (a starting gateway) sees
// the old file or the new one, never half of one.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".import-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// rootHandler serves the root's certificate (the last of the chain) at
// issuance.RootCertPath and, when ca.root_crl_file is set (crl not nil),
// the root's CRL at issuance.RootCRLPath: what the self-made issuing CA
// certificate's AIA and CRL DP point at. The CRL is served only if the root
// signed it, with Last-Modified and Expires from its thisUpdate and
// nextUpdate.
func rootHandler(root *x509.Certificate, crl *rootCRL) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+issuance.RootCertPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pkix-cert")
		w.Write(root.Raw)
	})
	if crl != nil {
		mux.HandleFunc("GET "+issuance.RootCRLPath, func(w http.ResponseWriter, r *http.Request) {
			der, c, err := crl.current()
			if err != nil {
				http.Error(w, "root CRL unavailable", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/pkix-crl")
			w.Header().Set("Last-Modified", c.ThisUpdate.UTC().Format(http.TimeFormat))
			if !c.NextUpdate.IsZero() {
				w.Header().Set("Expires", c.NextUpdate.UTC().Format(http.TimeFormat))
			}
			w.Write(der)
		})
	}
	return mux
}

// rootCRL is the root's CRL of ca.root_crl_file, re-read when the file
// changes (a new one from the ceremony needs no restart) and checked then:
// the root must have signed it. Its nextUpdate is the
// credgw_root_crl_next_update_timestamp_seconds gauge, so that an alert asks
// for the next one before relying parties that check the whole path refuse
// every credential.
type rootCRL struct {
	f    *watchedFile
	root *x509.Certificate

	mu      sync.Mutex
	checked []byte
	crl     *x509.RevocationList
	bad     error
}

// newRootCRL is nil when ca.root_crl_file is not set.
func newRootCRL(cfg *Config, root *x509.Certificate) *rootCRL {
	if cfg.CA.RootCRLFile == "" {
		return nil
	}
	return &rootCRL{f: &watchedFile{path: cfg.Path(cfg.CA.RootCRLFile)}, root: root}
}

// current is the file's CRL, checked.
func (c *rootCRL) current() ([]byte, *x509.RevocationList, error) {
	der, err := c.f.read()
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(der) == 0 || len(c.checked) == 0 || &der[0] != &c.checked[0] {
		c.checked = der
		c.crl, c.bad = x509.ParseRevocationList(der)
		if c.bad == nil {
			if err := c.crl.CheckSignatureFrom(c.root); err != nil {
				c.bad = fmt.Errorf("ca.root_crl_file: not a CRL the root %q signed: %w", c.root.Subject, err)
			}
		}
	}
	return der, c.crl, c.bad
}

// nextUpdate is the gauge's value: the CRL's nextUpdate in Unix seconds, or
// -1 when the file cannot be read or is not the root's CRL (the alert fires
// either way).
func (c *rootCRL) nextUpdate() float64 {
	_, crl, err := c.current()
	if err != nil {
		return -1
	}
	return float64(crl.NextUpdate.Unix())
}

// watchedFile caches a small file and reads it again when its size or
// modification time changes.
type watchedFile struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	b    []byte
}

func (f *watchedFile) read() ([]byte, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.b != nil && st.ModTime().Equal(f.mod) && st.Size() == f.size {
		return f.b, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	f.b, f.mod, f.size = b, st.ModTime(), st.Size()
	return b, nil
}

func dirOf(p string) string { return filepath.Dir(p) }

// placeCert moves what InitCA wrote to where the config wants it.
func placeCert(src, dst string) error {
	if filepath.Clean(src) == filepath.Clean(dst) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.Rename(src, dst)
}

// previousCAs reads ca.previous_certificate_files: the issuing CA's
// certificates from before a re-key, which earlier escrowed keys'
// certificates chain through (activation.Config.PreviousCAs). Each must be
// a CA certificate under the root of chain, checked as of its own start
// (it may have expired since: old mail still needs the keys it certified),
// and not chain[0].
func previousCAs(field string, files []string, chain []*x509.Certificate) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, f := range files {
		certs, err := readCerts([]string{f})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		for _, c := range certs {
			switch {
			case c.Equal(chain[0]):
				return nil, fmt.Errorf("%s: %s holds the issuing CA's certificate in use (ca.certificate_file): list only certificates from before a re-key", field, f)
			case bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil:
				return nil, fmt.Errorf("%s: %s: %q is self-signed (a root): list the issuing CA's certificate from before the re-key, never the root's (whose key must not be on the gateway)", field, f, c.Subject)
			case !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0:
				return nil, fmt.Errorf("%s: %s: %q is not a CA certificate (basicConstraints cA and keyCertSign)", field, f, c.Subject)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: c.NotBefore,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return nil, fmt.Errorf("%s: %s: %q does not chain to the issuing CA's root %q (ca.chain_files): %w", field, f, c.Subject, chain[len(chain)-1].Subject, err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// secretFileMode refuses a key file other users may read or change
// (notify.ReadSecretFile's rule), before it is read.
func secretFileMode(path, field string) error {
	b, err := notify.ReadSecretFile(path, field)
	clear(b)
	return err
}
