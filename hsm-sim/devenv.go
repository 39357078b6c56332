package hsmsim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/credgw/credgw/activation/attest"

	"github.com/credgw/credgw/pkcs11"
)

// DevOptions configures DevInit.
type DevOptions struct {
	// HSMURL is where the simulated issuer serves OCSP and CRLs.
	HSMURL string
	// GRPCAddr and HTTPAddr are the gateway's listen addresses;
	// ManagementAddr its management listener's and PortalAddr the
	// self-service portal's ("" = none).
	GRPCAddr, HTTPAddr, ManagementAddr, PortalAddr string
	// CardName, CardKey and CardEmail describe the one good card.
	CardName  string
	CardKey   pkcs11.KeyType
	CardEmail string
}

// DevEnv is a ready-to-run development environment.
type DevEnv struct {
	Dir    string
	Env    *Env
	Card   *CardInfo
	Config string // credgw.yaml
	// PINFile holds the card PIN (0600).
	PINFile string
	// CAFile is the gateway's TLS CA: clients trust it.
	CAFile string
	// CAToken is the SoftHSM token holding the issuing CA key and the
	// escrow KEK; CAPINFile its user PIN (0600).
	CAToken, CAPINFile string
	// Portal and admin client certificates and keys.
	PortalCert, PortalKey, AdminCert, AdminKey     string
	GRPCAddr, HTTPAddr, ManagementAddr, PortalAddr string
}

// DevInit makes dir (new or empty) a development environment: an hsm-sim
// environment with one good card, the gateway's TLS material (a CA, a server
// certificate for 127.0.0.1 and localhost, portal and admin client
// certificates), and credgw.yaml using SQLite dir/credgw.db with the
// simulated PIV issuer as trust anchor.
func DevInit(ctx context.Context, dir string, o DevOptions) (*DevEnv, error) {
	if o.CardName == "" {
		o.CardName = "Dev Cardholder"
	}
	if o.CardKey == 0 {
		o.CardKey = pkcs11.ECP256
	}
	if o.CardEmail == "" {
		o.CardEmail = "dev.cardholder@example.com"
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("hsmsim: %s is not empty: choose a new directory or remove it", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	d := &DevEnv{Dir: abs, GRPCAddr: o.GRPCAddr, HTTPAddr: o.HTTPAddr, ManagementAddr: o.ManagementAddr, PortalAddr: o.PortalAddr}
	if d.Env, err = Init(filepath.Join(abs, "hsm"), o.HSMURL); err != nil {
		return nil, err
	}
	pin, err := randomDigits(8)
	if err != nil {
		return nil, err
	}
	d.PINFile = filepath.Join(abs, "card.pin")
	if err := writeFileAtomic(d.PINFile, append(pin, '\n'), 0o600); err != nil {
		return nil, err
	}
	mod, err := d.Env.OpenModule()
	if err != nil {
		return nil, err
	}
	d.Card, err = d.Env.NewCard(ctx, mod, CardSpec{Name: o.CardName, PIN: pin, Key: o.CardKey, Email: o.CardEmail})
	if err == nil {
		d.CAToken = "credgw-ca"
		d.CAPINFile = filepath.Join(abs, "ca", "token.pin")
		err = d.Env.NewCAToken(mod, d.CAToken, d.CAPINFile)
	}
	mod.Close()
	if err != nil {
		return nil, err
	}
	if err := d.writeTLS(); err != nil {
		return nil, err
	}
	// Key attestation: Google's roots (real phones) and a simulated vendor
	// (credgw redeem --attest-sim hsm/attest-vendor).
	if _, err := InitVendor(filepath.Join(abs, "hsm", "attest-vendor")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, "attest"), 0o755); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(abs, "attest", "google-roots.pem"), attest.GoogleRootsPEM(), 0o644); err != nil {
		return nil, err
	}
	// An empty attestation status list (a deployment fetches Google's).
	if err := writeFileAtomic(filepath.Join(abs, "attest", "status.json"), []byte("{\"entries\": {}}\n"), 0o644); err != nil {
		return nil, err
	}
	if d.PortalAddr != "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(filepath.Join(abs, "tls", "portal-csrf.key"), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	d.Config = filepath.Join(abs, "credgw.yaml")
	var b strings.Builder
	if err := devConfig.Execute(&b, d); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(d.Config, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	return d, nil
}

// writeTLS makes the gateway's TLS CA, server and client certificates.
func (d *DevEnv) writeTLS() error {
	tdir := filepath.Join(d.Dir, "tls")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"credgw development"}, CommonName: "credgw development TLS CA " + keySuffix(caKey.Public())},
		NotBefore: now, NotAfter: now.AddDate(2, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ca, err := issue(caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	d.CAFile = filepath.Join(tdir, "ca.crt")
	if err := writePEM(d.CAFile, ca); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(tdir, "ca.key"), caKey); err != nil {
		return err
	}
	leaf := func(name string, tmpl *x509.Certificate) (string, string, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl.NotBefore, tmpl.NotAfter = now, now.AddDate(1, 0, 0)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		c, err := issue(tmpl, ca, k.Public(), caKey)
		if err != nil {
			return "", "", err
		}
		cp, kp := filepath.Join(tdir, name+".crt"), filepath.Join(tdir, name+".key")
		if err := writePEM(cp, c); err != nil {
			return "", "", err
		}
		return cp, kp, writePEM(kp, k)
	}
	serverCert, _, err := leaf("server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "credgw"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return err
	}
	// The server sends its chain up to the anchor: a device that knows only
	// the anchor's SHA-256 (from the QR code) finds and checks it.
	leafPEM, err := os.ReadFile(serverCert)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(d.CAFile)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(serverCert, append(leafPEM, caPEM...), 0o644); err != nil {
		return err
	}
	client := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	if d.PortalCert, d.PortalKey, err = leaf("portal", client("credgw-portal")); err != nil {
		return err
	}
	d.AdminCert, d.AdminKey, err = leaf("admin", client("credgw-admin"))
	return err
}

var devConfig = template.Must(template.New("credgw.yaml").Parse(`# credgw development configuration, written by 'credgw dev init'.
# Every field is documented in docs/config.md. Paths are relative to this file.
gateway_id: credgw-dev
# A development environment: ca.base_url may be a loopback address.
development: true
listen:
  grpc: {{.GRPCAddr}}
  # Public: what relying parties fetch (OCSP, CRLs, CA certificates).
  http: {{.HTTPAddr}}
{{- if .ManagementAddr}}
  # Operators only: /healthz, /readyz, /metrics, /debug/pprof/.
  management: {{.ManagementAddr}}
{{- end}}
tls:
  cert_file: tls/server.crt
  key_file: tls/server.key
  client_ca_files: [tls/ca.crt]
  min_version: "1.2"
roles:
  portal:
    - subject_cn: credgw-portal
  admin:
    - subject_cn: credgw-admin
store:
  driver: sqlite
  dsn: credgw.db
piv:
  # The simulated PIV card issuer of hsm/ (credgw hsm-sim serve --dir hsm).
  trust_anchor_files: [hsm/issuer/piv-ca/root.crt]
  intermediate_files: [hsm/issuer/piv-ca/ca.crt]
  policies: ["2.16.840.1.101.3.2.1.3.13"]
  ocsp_timeout: 5s
  crl_timeout: 10s
  challenge_ttl: 2m
  session_ttl: 20m
  person_attribute: fascn
limits:
  max_recv_bytes: 1048576
  rpc_timeout: 30s
  shutdown_timeout: 15s
log:
  level: info
hsm:
  # SoftHSM of hsm/: the simulated cards and the CA token live there.
  softhsm2_conf: hsm/softhsm2.conf
ca:
  name: issuing-ca
  # Written by 'credgw ca init --config credgw.yaml' (dev init runs it).
  certificate_file: ca/issuing.crt
  chain_files: [ca/root.crt]
  key_uri: "pkcs11:token={{.CAToken}};id=%01?pin-source=ca/token.pin"
  key_type: p256
  base_url: http://{{.HTTPAddr}}
  # The root's CRL, served at /crl/root.crl; renew it with credgw ca root-crl.
  root_crl_file: ca/root.crl
  validity: 8760h
  # Derived PIV Authentication certificates of keys a device attests in
  # hardware (attestation, below) assert …3.41; all others …3.40. On here
  # to show the path: the Common Policy (§3.2.3) allows …3.41 only after
  # in-person or supervised remote registration with a biometric match,
  # which a remote QR enrollment alone is not; a deployment enables it
  # only if its enrollment process provides that.
  hardware_backed_devices: true
escrow:
  kek_uri: "pkcs11:token={{.CAToken}};id=%02?pin-source=ca/token.pin"
  # rsa2048 keeps the demo quick; a deployment uses rsa3072 or p256
  # (config.md: rsa2048 is refused once certificates would run past 2030).
  key_type: rsa2048
  pool_size: 2
enrollment:
  # Devices dial this address and pin the TLS anchor's SHA-256 from the QR code.
  gateway_address: {{.GRPCAddr}}
  tls_anchor_file: tls/ca.crt
  password_digits: 8
  lifetime: 10m
  max_attempts: 5
  max_credential_sets: 5
  confirm_window: 1h
notifications:
  # Each binding, key delivery and failed attempt is told to the person
  # (Common Policy §4.12.1: escrowed keys are delivered only so). A
  # deployment sends mail (smtp) or posts to its own system (webhook);
  # here each is one JSON line in this file.
  file: notifications.jsonl
attestation:
  # Android Key Attestation roots: Google's (real phones) and the simulated
  # vendor of hsm/ (credgw redeem --attest-sim hsm/attest-vendor).
  android_root_files: [attest/google-roots.pem, hsm/attest-vendor/root.crt]
  # Google's attestation status list: a deployment refreshes it with a job
  # (it is refused when older than status_max_age); here an empty one.
  status_file: attest/status.json
  status_max_age: 87600h
  security_levels: [trusted_environment, strongbox]
  require_verified_boot: true
  require_device_locked: true
  # A device that attests nothing gets …3.40 (refuse: no issuance).
  unattested: allow
{{- if .PortalAddr}}
portal:
  # The self-service portal: https://{{.PortalAddr}}/ ; sign-in is the
  # browser's TLS client authentication with the card.
  listen: {{.PortalAddr}}
  csrf_key_file: tls/portal-csrf.key
{{- end}}
`))
