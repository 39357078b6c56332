package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/piv"
)

// live is what a reload (SIGHUP, `systemctl reload`) replaces while the
// gateway serves: the TLS certificates, the role certificates' CAs and the
// roles, and the PIV trust anchors and intermediates. Each handshake and
// each call reads the pointer once, so it sees one whole generation.
type live struct {
	cert        *tls.Certificate // tls.cert_file, tls.key_file
	webhookCert *tls.Certificate // termination_webhook.tls_*; nil: plain HTTP
	clientCAs   *x509.CertPool   // tls.client_ca_files; nil: no roles
	// clientChains caches the chains built against clientCAs.
	clientChains *chainCache
	// revokedClients are the serials tls.client_crl_files list, by
	// issuer: issuer's RawSubject ‖ NUL ‖ hex serial.
	revokedClients map[string]bool
	staleCRLs      []string // those of tls.client_crl_files past their nextUpdate
	roles          RolesConfig
	anchors        *x509.CertPool // piv.trust_anchor_files
	inter          []*x509.Certificate
	// pivIssuers are named in the portal's CertificateRequest, so that a
	// browser offers the card's certificate and not every one it holds.
	pivIssuers *x509.CertPool
}

// loadLive reads what cfg names for the reloadable part. pin is what
// devices pin (nil: no CA): the new TLS certificate must still satisfy it.
func loadLive(cfg *Config, pin *tlsPin) (*live, error) {
	l := &live{roles: cfg.Roles}
	cert, err := loadKeyPair(cfg.Path(cfg.TLS.CertFile), cfg.Path(cfg.TLS.KeyFile), "tls.key_file")
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	l.cert = &cert
	if pin != nil {
		if err := presentsAnchor(&cert, pin.anchor, pin.host); err != nil {
			return nil, err
		}
	}
	if cfg.Webhook.TLSCertFile != "" {
		wc, err := loadKeyPair(cfg.Path(cfg.Webhook.TLSCertFile), cfg.Path(cfg.Webhook.TLSKeyFile), "termination_webhook.tls_key_file")
		if err != nil {
			return nil, fmt.Errorf("termination_webhook.tls_cert_file, tls_key_file: %w", err)
		}
		l.webhookCert = &wc
	}
	if len(cfg.TLS.ClientCAFiles) > 0 {
		cas, err := readCerts(paths(cfg, cfg.TLS.ClientCAFiles))
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_files: %w", err)
		}
		l.clientCAs, l.clientChains = x509.NewCertPool(), newChainCache()
		for _, c := range cas {
			l.clientCAs.AddCert(c)
		}
		if l.revokedClients, l.staleCRLs, err = readClientCRLs(paths(cfg, cfg.TLS.ClientCRLFiles), cas, time.Now()); err != nil {
			return nil, fmt.Errorf("tls.client_crl_files: %w", err)
		}
	}
	anchors, err := readCerts(paths(cfg, cfg.PIV.TrustAnchorFiles))
	if err != nil {
		return nil, fmt.Errorf("piv.trust_anchor_files: %w", err)
	}
	l.anchors = x509.NewCertPool()
	for _, c := range anchors {
		l.anchors.AddCert(c)
	}
	if len(cfg.PIV.IntermediateFiles) > 0 {
		if l.inter, err = readCerts(paths(cfg, cfg.PIV.IntermediateFiles)); err != nil {
			return nil, fmt.Errorf("piv.intermediate_files: %w", err)
		}
	}
	l.pivIssuers = l.anchors.Clone()
	for _, c := range l.inter {
		l.pivIssuers.AddCert(c)
	}
	return l, nil
}

// Reload applies cfg's reloadable fields while the gateway serves: TLS
// certificates (gRPC, portal, webhook), tls.client_ca_files and
// tls.client_crl_files and roles,
// piv.trust_anchor_files and piv.intermediate_files, and log.level. If a
// file cannot be read nothing changes and the error says why. It returns
// the fields that changed but take effect only at a restart (each is
// logged too). Connections open already keep the certificate they were
// made with; calls and handshakes after Reload returns see the new ones.
func (s *Server) Reload(cfg *Config) (restartNeeded []string, err error) {
	// The QR codes out there pin what was read at start (the anchor and
	// the address are not reloadable): the new certificate is checked
	// against that, not against what the files say now.
	l, err := loadLive(cfg, s.pin)
	if err != nil {
		s.log.Error("reload failed: nothing changed", "err", err.Error())
		return nil, fmt.Errorf("reload: %w (nothing changed)", err)
	}
	if prev := s.live.Load(); (prev.webhookCert == nil) != (l.webhookCert == nil) {
		// Whether the webhook listener speaks TLS is fixed at start: keep
		// what it serves with until a restart.
		l.webhookCert = prev.webhookCert
	}
	if err := s.verifier.SetTrust(l.anchors, l.inter); err != nil {
		return nil, fmt.Errorf("reload: %w (nothing changed)", err)
	}
	s.live.Store(l)
	l.warnStaleCRLs(s.log)
	if s.level != nil {
		s.level.Set(parseLevel(cfg.Log.Level))
	}
	restartNeeded = unreloadable(s.cfg, cfg)
	for _, f := range restartNeeded {
		s.log.Warn("reload: changed, but applied only at a restart", "field", f)
	}
	leaf := l.cert.Leaf
	s.log.Info("configuration reloaded", "tls_subject", leaf.Subject.String(), "tls_serial", fmt.Sprintf("%X", leaf.SerialNumber),
		"tls_not_after", leaf.NotAfter.UTC().Format("2006-01-02 15:04:05 MST"), "admin_matches", len(l.roles.Admin),
		"portal_matches", len(l.roles.Portal), "piv_intermediates", len(l.inter), "log_level", cfg.Log.Level)
	return restartNeeded, nil
}

// reloadableFields are the dotted config fields Reload applies.
var reloadableFields = []string{
	"tls.cert_file", "tls.key_file", "tls.client_ca_files", "tls.client_crl_files", "roles",
	"piv.trust_anchor_files", "piv.intermediate_files", "log.level",
	"termination_webhook.tls_cert_file", "termination_webhook.tls_key_file",
}

// unreloadable lists the fields (section.field) that differ between old
// and new and that only a restart applies.
func unreloadable(old, new *Config) []string {
	var out []string
	if (old.Webhook.TLSCertFile == "") != (new.Webhook.TLSCertFile == "") {
		out = append(out, "termination_webhook.tls_cert_file (TLS on or off)")
	}
	ov, nv := reflect.ValueOf(*old), reflect.ValueOf(*new)
	t := ov.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if slices.Contains(reloadableFields, name) {
			continue
		}
		a, b := ov.Field(i), nv.Field(i)
		if f.Type.Kind() != reflect.Struct || f.Type == durationType {
			if !reflect.DeepEqual(a.Interface(), b.Interface()) {
				out = append(out, name)
			}
			continue
		}
		for j := range f.Type.NumField() {
			sf := f.Type.Field(j)
			if !sf.IsExported() {
				continue
			}
			sub, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			full := name + "." + sub
			if slices.Contains(reloadableFields, full) {
				continue
			}
			if !reflect.DeepEqual(a.Field(j).Interface(), b.Field(j).Interface()) {
				out = append(out, full)
			}
		}
	}
	return out
}

// LogLevel is a log level that a reload can change (log.level).
func LogLevel(name string) *slog.LevelVar {
	v := new(slog.LevelVar)
	v.Set(parseLevel(name))
	return v
}

func parseLevel(name string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(name)) // validated with the config
	return l
}

// WithLogLevel lets Reload change the logger's level (the level the
// logger of WithLogger was made with: NewLeveledLogger).
func WithLogLevel(v *slog.LevelVar) Option { return func(o *options) { o.level = v } }

// readClientCRLs reads CRLs (PEM or DER), each signed by one of cas, into
// the set of revoked client certificates, and names those past their
// nextUpdate at now (still used: what they list stays revoked).
func readClientCRLs(files []string, cas []*x509.Certificate, now time.Time) (map[string]bool, []string, error) {
	revoked := map[string]bool{}
	var stale []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		var ders [][]byte
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if blk.Type == "X509 CRL" {
				ders = append(ders, blk.Bytes)
			}
		}
		if len(ders) == 0 {
			ders = [][]byte{b} // DER
		}
		for _, der := range ders {
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", f, err)
			}
			if piv.SHA1Signed(crl.SignatureAlgorithm) {
				return nil, nil, fmt.Errorf("%s: the CRL of %q is signed with SHA-1, which status signatures may not use (Common Policy 7.1.3): get one signed with SHA-256 or better from its CA", f, crl.Issuer)
			}
			signed := slices.ContainsFunc(cas, func(ca *x509.Certificate) bool {
				return bytes.Equal(crl.RawIssuer, ca.RawSubject) && crl.CheckSignatureFrom(ca) == nil
			})
			if !signed {
				return nil, nil, fmt.Errorf("%s: the CRL of %q is signed by none of tls.client_ca_files", f, crl.Issuer)
			}
			if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
				stale = append(stale, fmt.Sprintf("%s (%s, nextUpdate %s)", f, crl.Issuer, crl.NextUpdate.UTC().Format(time.RFC3339)))
			}
			for _, e := range crl.RevokedCertificateEntries {
				revoked[string(crl.RawIssuer)+"\x00"+e.SerialNumber.Text(16)] = true
			}
		}
	}
	return revoked, stale, nil
}

// clientRevoked returns the certificate of a verified client chain that a
// CRL of tls.client_crl_files lists (the client's or an intermediate CA's),
// or nil.
func (l *live) clientRevoked(chain []*x509.Certificate) *x509.Certificate {
	for _, c := range chain {
		if l.revokedClients[string(c.RawIssuer)+"\x00"+c.SerialNumber.Text(16)] {
			return c
		}
	}
	return nil
}

// warnStaleCRLs logs the client CRLs past their nextUpdate.
func (l *live) warnStaleCRLs(log *slog.Logger) {
	for _, s := range l.staleCRLs {
		log.Warn("tls.client_crl_files: a CRL is past its nextUpdate; it is still used, but get the CA's current one", "crl", s)
	}
}

// tlsPin is what devices pin of the gateway, from the QR code: the TLS
// anchor (enrollment.tls_anchor_file) and the host they dial
// (enrollment.gateway_address).
type tlsPin struct {
	anchor *x509.Certificate
	host   string
}

// readTLSPin reads what QR codes made with c pin (nil without a CA: no
// device pins the gateway then).
func (c *Config) readTLSPin() (*tlsPin, error) {
	if c.CA.CertificateFile == "" || c.Enroll.TLSAnchorFile == "" {
		return nil, nil
	}
	anchors, err := readCerts([]string{c.Path(c.Enroll.TLSAnchorFile)})
	if err != nil {
		return nil, fmt.Errorf("enrollment.tls_anchor_file: %w", err)
	}
	host, _, err := net.SplitHostPort(c.Enroll.GatewayAddress)
	if err != nil {
		return nil, fmt.Errorf("enrollment.gateway_address %q: %w", c.Enroll.GatewayAddress, err)
	}
	return &tlsPin{anchor: anchors[0], host: host}, nil
}

// checkTLSAnchor is presentsAnchor for the pin of c.
func (c *Config) checkTLSAnchor(cert *tls.Certificate) error {
	pin, err := c.readTLSPin()
	if err != nil || pin == nil {
		return err
	}
	return presentsAnchor(cert, pin.anchor, pin.host)
}

// presentsAnchor checks the gateway's TLS certificate as devices will:
// the handshake must present enrollment.tls_anchor_file (its SHA-256 is
// the QR code's pin), and the server certificate must chain to it and
// name host, the address in the QR code (enrollment.gateway_address; ""
// for none). A device refuses a gateway that fails any of these as an
// impostor, so the gateway refuses to start (or to reload) with it.
func presentsAnchor(cert *tls.Certificate, anchor *x509.Certificate, host string) error {
	if len(cert.Certificate) == 0 {
		return errors.New("tls.cert_file holds no certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls.cert_file: %w", err)
		}
	}
	found := bytes.Equal(leaf.Raw, anchor.Raw)
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if bytes.Equal(der, anchor.Raw) {
			found = true
			continue
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("tls.cert_file: %w", err)
		}
		inter.AddCert(c)
	}
	if !found {
		return fmt.Errorf("tls.cert_file does not carry enrollment.tls_anchor_file (%s): devices pin that certificate from the QR code and refuse a gateway whose handshake does not present it; append it to tls.cert_file (PEM, after the server certificate and any intermediates)", anchor.Subject)
	}
	if host != "" {
		if err := leaf.VerifyHostname(host); err != nil {
			return fmt.Errorf("tls.cert_file's certificate (%s) does not name %q, the host of enrollment.gateway_address that devices dial (it names DNS %q, IP %q): add a subjectAltName for it, or set gateway_address to one of those",
				leaf.Subject, host, leaf.DNSNames, leaf.IPAddresses)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("tls.cert_file (%s) does not chain to enrollment.tls_anchor_file (%s) as devices check it, for the name %q of enrollment.gateway_address: %w",
			leaf.Subject, anchor.Subject, host, err)
	}
	return nil
}

// loadKeyPair is tls.LoadX509KeyPair with the key read as a secret file
// (notify.ReadSecretFile: one other users may read is refused); field
// names the key's setting in errors.
func loadKeyPair(certFile, keyFile, field string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := notify.ReadSecretFile(keyFile, field)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer clear(keyPEM)
	return tls.X509KeyPair(certPEM, keyPEM)
}
