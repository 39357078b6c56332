package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credgw/credgw/activation/attest"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
	"go.yaml.in/yaml/v3"
)

// Config is credgw.yaml. Every field is documented, with its default, in
// docs/config.md. Unknown fields are an error. Relative paths are relative
// to the config file's directory.
type Config struct {
	// Development marks a development environment (dev init): ca.base_url
	// may then be left out (it defaults to listen.http) and be loopback.
	Development bool `yaml:"development"`
	// GatewayID names this gateway in signed PKI-AUTH messages.
	GatewayID string        `yaml:"gateway_id"`
	Listen    ListenConfig  `yaml:"listen"`
	TLS       TLSConfig     `yaml:"tls"`
	Roles     RolesConfig   `yaml:"roles"`
	Store     StoreConfig   `yaml:"store"`
	PIV       PIVConfig     `yaml:"piv"`
	Limits    LimitsConfig  `yaml:"limits"`
	Log       LogConfig     `yaml:"log"`
	HSM       HSMConfig     `yaml:"hsm"`
	CA        CAConfig      `yaml:"ca"`
	Escrow    EscrowConfig  `yaml:"escrow"`
	Enroll    EnrollConfig  `yaml:"enrollment"`
	Portal    PortalConfig  `yaml:"portal"`
	Webhook   WebhookConfig `yaml:"termination_webhook"`
	Linkage   LinkageConfig `yaml:"linkage"`
	Notify    notify.Config `yaml:"notifications"`
	Renewal   RenewalConfig `yaml:"renewal"`
	Attest    AttestConfig  `yaml:"attestation"`
	// Telemetry is OpenTelemetry tracing (telemetry.go).
	Telemetry TelemetryConfig `yaml:"telemetry"`

	dir string // directory of the config file
}

// ListenConfig is where credgw listens.
type ListenConfig struct {
	// GRPC is the gRPC (TLS) address.
	GRPC string `yaml:"grpc"`
	// HTTP is the public plain-HTTP address for relying parties: OCSP,
	// CRLs and CA certificates, nothing else ("" = off).
	HTTP string `yaml:"http"`
	// Management is the plain-HTTP address for operators: /healthz,
	// /readyz, /metrics, /debug/pprof/ and, unless termination_webhook.listen
	// is set, the termination webhook ("" = off).
	Management string `yaml:"management"`
	// PProf is who gets /debug/pprof/ on the management listener:
	// "loopback" (the default: a shell on the host, kubectl port-forward),
	// "any", or "off".
	PProf string `yaml:"pprof"`
}

// TLSConfig is the gRPC listener's TLS.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFiles verify portal and admin client certificates.
	ClientCAFiles []string `yaml:"client_ca_files"`
	// ClientCRLFiles are CRLs of those CAs (PEM or DER, reloaded with
	// SIGHUP): a listed client certificate gets no role.
	ClientCRLFiles []string `yaml:"client_crl_files"`
	// MinVersion is "1.2" or "1.3".
	MinVersion string `yaml:"min_version"`
}

// RolesConfig maps mTLS client certificates to roles.
type RolesConfig struct {
	Portal []ClientMatch `yaml:"portal"`
	Admin  []ClientMatch `yaml:"admin"`
}

// ClientMatch matches a verified client certificate: every field that is
// set must match.
type ClientMatch struct {
	SubjectCN string `yaml:"subject_cn"`
	// SHA256 is the hex SHA-256 fingerprint of the certificate.
	SHA256 string `yaml:"sha256"`
	// DNSName must be one of the certificate's dNSName SANs.
	DNSName string `yaml:"dns_name"`
}

// StoreConfig selects the database.
type StoreConfig struct {
	// Driver is "sqlite" (the embedded default) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is, for sqlite, the database file path; for postgres, a
	// connection URL (postgres://user@host:5432/credgw?sslmode=verify-full).
	DSN string `yaml:"dsn"`
	// MaxConns bounds the PostgreSQL pool.
	MaxConns int `yaml:"max_conns"`
	// SQLiteSynchronous is "full" (the default: every commit on the disk
	// before it returns) or "normal" (faster; the machine's crash may
	// lose the last commits).
	SQLiteSynchronous string `yaml:"sqlite_synchronous"`
	// MigrateOnStart makes serve migrate a PostgreSQL schema at start
	// (under migrate's advisory lock), as the embedded SQLite store
	// always does.
	MigrateOnStart bool `yaml:"migrate_on_start"`
}

// PIVConfig is PKI-AUTH.
type PIVConfig struct {
	TrustAnchorFiles  []string `yaml:"trust_anchor_files"`
	IntermediateFiles []string `yaml:"intermediate_files"`
	// Policies the PIV Authentication certificate itself must assert.
	Policies        []string `yaml:"policies"`
	OCSPTimeout     Duration `yaml:"ocsp_timeout"`
	CRLTimeout      Duration `yaml:"crl_timeout"`
	ChallengeTTL    Duration `yaml:"challenge_ttl"`
	SessionTTL      Duration `yaml:"session_ttl"`
	PersonAttribute string   `yaml:"person_attribute"`
	// MaxStatusAge is how old a card's OCSP/CRL status may be when it
	// admits a sign-in, an enrollment, a redemption or a renewal.
	MaxStatusAge Duration `yaml:"max_status_age"`
}

// LimitsConfig bounds requests.
type LimitsConfig struct {
	MaxRecvBytes    int      `yaml:"max_recv_bytes"`
	RPCTimeout      Duration `yaml:"rpc_timeout"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// NewWork is how many sign-ins (BeginSession, CompleteSession) and new
	// enrollments (CreateEnrollment) run at once; more wait, within their
	// deadline, so that under load redemptions already under way are
	// served first (see admission.go). 0: half the CPUs, at least one; -1:
	// no limit.
	NewWork int `yaml:"new_work"`
	// Rates limits what a card can start (ratelimit.go).
	Rates RatesConfig `yaml:"rates"`

	// What slow and idle clients may hold (connlimit.go, streams.go).

	// MaxConnsPerSource bounds the open connections of one source address
	// on each listener; more are closed at once. -1: no limit.
	MaxConnsPerSource int `yaml:"max_conns_per_source"`
	// SourcePrefixV6 is how much of an IPv6 address is the source that
	// limit counts (64: a /64, what one subscriber or LAN is given;
	// 128: each address).
	SourcePrefixV6 int `yaml:"source_prefix_v6"`
	// HTTPReadHeaderTimeout, HTTPReadTimeout, HTTPWriteTimeout and
	// HTTPIdleTimeout bound the portal and plain-HTTP listeners.
	HTTPReadHeaderTimeout Duration `yaml:"http_read_header_timeout"`
	HTTPReadTimeout       Duration `yaml:"http_read_timeout"`
	HTTPWriteTimeout      Duration `yaml:"http_write_timeout"`
	HTTPIdleTimeout       Duration `yaml:"http_idle_timeout"`
	// GRPCIdleTimeout closes a gRPC connection without calls for so long.
	GRPCIdleTimeout Duration `yaml:"grpc_idle_timeout"`
	// GRPCMaxConnectionAge sends GOAWAY to a connection this old; it is
	// closed stream_timeout later.
	GRPCMaxConnectionAge Duration `yaml:"grpc_max_connection_age"`
	// MaxStreamsPerConn bounds the concurrent calls of one gRPC connection.
	MaxStreamsPerConn int `yaml:"max_streams_per_conn"`
	// StreamTimeout is the deadline of a Redeem or Rekey stream.
	StreamTimeout Duration `yaml:"stream_timeout"`
	// MaxWatchStreams bounds the Health/Watch streams open at once, and,
	// with a count of its own, the server reflection streams (each of
	// which lasts at most RPCTimeout).
	MaxWatchStreams int `yaml:"max_watch_streams"`
	// MaxWatchStreamsPerSource bounds how many of either kind one source
	// (an IPv4 address, an IPv6 SourcePrefixV6) holds. -1: no bound.
	MaxWatchStreamsPerSource int `yaml:"max_watch_streams_per_source"`
	// MemoryLimit is the Go runtime's soft memory limit, bytes
	// (debug.SetMemoryLimit): near it the garbage collector runs more
	// often rather than let the heap grow to GOGC's target. -1: none.
	// GOMEMLIMIT in the environment wins. credgw serve applies it.
	MemoryLimit int64 `yaml:"memory_limit"`
}

// HSMConfig says how to reach PKCS#11.
type HSMConfig struct {
	// Module is the PKCS#11 library (default: SoftHSM 2).
	Module string `yaml:"module"`
	// SoftHSM2Conf, if set, becomes SOFTHSM2_CONF before the module loads.
	SoftHSM2Conf string `yaml:"softhsm2_conf"`
}

// AttestConfig is key attestation of device keys (docs/config.md,
// "attestation"): what a device's attestation must show for its derived PIV
// Authentication certificate to assert …3.41 (with
// ca.hardware_backed_devices), and what an unattested device gets.
type AttestConfig struct {
	// AndroidRootFiles are PEM attestation roots; none: Google's published
	// hardware attestation roots (built in).
	AndroidRootFiles []string `yaml:"android_root_files"`
	// StatusFile is Google's attestation status list (JSON), kept fresh by
	// the operator's job; revoked attestation certificates are refused. It
	// is read again whenever it changes. Required with
	// ca.hardware_backed_devices.
	StatusFile string `yaml:"status_file"`
	// StatusMaxAge: an older status file (by its modification time) fails
	// attestations closed (Unavailable). Default 24h.
	StatusMaxAge Duration `yaml:"status_max_age"`
	// SecurityLevels accepted: trusted_environment, strongbox, software
	// (default: the first two).
	SecurityLevels []string `yaml:"security_levels"`
	// RequireVerifiedBoot and RequireDeviceLocked (default true each).
	RequireVerifiedBoot *bool `yaml:"require_verified_boot"`
	RequireDeviceLocked *bool `yaml:"require_device_locked"`
	// Unattested is what a device that sends no attestation gets: "allow"
	// (…3.40, software-backed; the default) or "refuse".
	Unattested string `yaml:"unattested"`
}

// RetiredCAConfig is an earlier key of the issuing CA (docs/key-ceremony.md,
// "Re-keying the issuing CA").
type RetiredCAConfig struct {
	// Name is the ca.name it had: its certificates' OCSP and CRL URLs.
	Name            string `yaml:"name"`
	CertificateFile string `yaml:"certificate_file"`
	KeyURI          string `yaml:"key_uri"`
	KeyFile         string `yaml:"key_file"`
}

// CAConfig is the issuing CA. Without certificate_file credgw runs without
// issuance (PKI-AUTH only).
type CAConfig struct {
	Name            string   `yaml:"name"`
	CertificateFile string   `yaml:"certificate_file"`
	ChainFiles      []string `yaml:"chain_files"`
	// PreviousCertificateFiles are the issuing CA's certificates from
	// before a re-key: earlier escrowed keys certified under them are
	// delivered with the one that signed them.
	PreviousCertificateFiles []string `yaml:"previous_certificate_files"`
	// Retired are the issuing CA's earlier keys after a re-key, each
	// under the name it had: status only (OCSP, CRL) for the
	// certificates it issued, until they expire.
	Retired []RetiredCAConfig `yaml:"retired"`
	// KeyURI is the issuing key in the HSM (pkcs11: URI with id= and
	// pin-source=); KeyFile a PKCS#8 PEM file instead.
	KeyURI  string `yaml:"key_uri"`
	KeyFile string `yaml:"key_file"`
	// KeyType for `credgw ca init`: p256, p384 or rsa3072.
	KeyType string `yaml:"key_type"`
	// BaseURL is the public http URL of listen.http (CRL, OCSP, caIssuers).
	BaseURL string `yaml:"base_url"`
	// RootCRLFile is the root's CRL (DER), signed at the ceremony with
	// `credgw ca root-crl`; the gateway serves it at /crl/root.crl, the
	// self-made issuing CA's CRL DP. Re-read when the file changes.
	RootCRLFile           string            `yaml:"root_crl_file"`
	Validity              Duration          `yaml:"validity"`
	HardwareBackedDevices bool              `yaml:"hardware_backed_devices"`
	Templates             map[string]string `yaml:"templates"`
}

// EscrowConfig is the key-management key escrow.
type EscrowConfig struct {
	// KEKURI is the AES-256 key-encryption key in the HSM; KEKFile a file
	// (embedded default only).
	KEKURI   string `yaml:"kek_uri"`
	KEKFile  string `yaml:"kek_file"`
	KeyType  string `yaml:"key_type"`
	PoolSize int    `yaml:"pool_size"`
}

// EnrollConfig is enrollment and redemption.
type EnrollConfig struct {
	// GatewayAddress is what devices dial (the QR's gw=); default listen.grpc.
	GatewayAddress string `yaml:"gateway_address"`
	// TLSAnchorFile is the PEM trust anchor of the gateway's TLS
	// certificate; its SHA-256 is the QR's pin=. The server certificate
	// file must carry the chain up to it.
	TLSAnchorFile  string   `yaml:"tls_anchor_file"`
	PasswordDigits int      `yaml:"password_digits"`
	Lifetime       Duration `yaml:"lifetime"`
	MaxAttempts    int      `yaml:"max_attempts"`
	MaxSets        int      `yaml:"max_credential_sets"`
	ConfirmWindow  Duration `yaml:"confirm_window"`
}

// PortalConfig is the self-service portal's HTTPS listener (TLS from tls:,
// sign-in by the card's TLS client certificate).
type PortalConfig struct {
	// Listen is the portal's address ("" = no portal).
	Listen string `yaml:"listen"`
	// CSRFKeyFile holds 32 random bytes in hex, the same on every replica.
	CSRFKeyFile string `yaml:"csrf_key_file"`
	// MaxConnectionAge bounds how long one TLS connection, and so one
	// proof of the card, serves pages: a request on an older connection
	// is sent again on a new one, whose handshake needs the card.
	MaxConnectionAge Duration `yaml:"max_connection_age"`
	// HandshakeTimeout bounds a TLS handshake, during which the browser
	// has the person choose the card's certificate and type its PIN.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
}

// DefaultPortalHandshakeTimeout is portal.handshake_timeout's default:
// time to choose the certificate and type the card's PIN.
const DefaultPortalHandshakeTimeout = 2 * time.Minute

// DefaultPortalMaxConnectionAge is portal.max_connection_age's default: a
// card pulled from the reader stops serving its portal session within
// about this long, at the cost of a TLS handshake with the card (no PIN:
// the browser keeps the card's login) a minute while a person is on the
// pages.
const DefaultPortalMaxConnectionAge = time.Minute

// WebhookConfig is the termination webhook of an identity management
// system: POST /v1/webhooks/termination, on its own listener or on
// listen.management.
type WebhookConfig struct {
	// SecretFile holds the HMAC-SHA-256 key, 64 hex digits ("" = no webhook).
	SecretFile string `yaml:"secret_file"`
	// Listen is the webhook's own address, where the identity system
	// reaches it ("" = on listen.management).
	Listen string `yaml:"listen"`
	// TLSCertFile and TLSKeyFile make Listen HTTPS ("" = plain HTTP).
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// MaxSkew is how far the signed timestamp may be from now (default 5m).
	MaxSkew Duration `yaml:"max_skew"`
}

// LinkageConfig schedules the re-checks of the PIV Authentication
// certificates that have live derived credentials (SP 800-157r1 §2.4).
type LinkageConfig struct {
	// FirstCheck is the delay from enrollment to the first check (7 days).
	FirstCheck Duration `yaml:"first_check"`
	// Interval between checks (24h; 1h to 7 days).
	Interval Duration `yaml:"interval"`
	// MaxUnknown is how long the status may stay unavailable before
	// OnUnknown applies (7 days).
	MaxUnknown Duration `yaml:"max_unknown"`
	// OnUnknown is "alert" (log and metric, keep the credentials) or
	// "revoke".
	OnUnknown string `yaml:"on_unknown"`
	// OnCardExpiry is "keep" (SP 800-157r1 §2.3: derived credentials are
	// unaffected when the card is replaced) or "revoke".
	OnCardExpiry string `yaml:"on_card_expiry"`
	// Concurrency is how many cards a replica checks at once (4; 1–32).
	Concurrency int `yaml:"concurrency"`
}

// RenewalConfig is re-key without the card (Renewal.Rekey).
type RenewalConfig struct {
	// OpensAtPercent of the current derived PIV Authentication
	// certificate's lifetime, renewal is allowed (default 80; 50–95).
	OpensAtPercent int `yaml:"opens_at_percent"`
}

// LogConfig is the JSON log.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
}

// Duration is a time.Duration written as "2m", "30s".
type Duration struct{ time.Duration }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 30s, 2m, 1h)", n.Line, s)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Defaults.
const (
	DefaultGRPCAddr     = "127.0.0.1:8443"
	DefaultHTTPAddr     = "127.0.0.1:8080"
	DefaultChallengeTTL = session.DefaultChallengeTTL
	DefaultSessionTTL   = session.DefaultSessionTTL
	DefaultMaxRecvBytes = 1 << 20
	DefaultRPCTimeout   = 30 * time.Second
	DefaultShutdown     = 15 * time.Second

	// What slow and idle clients may hold: far above what a phone, a
	// browser or a load balancer's health check needs.
	DefaultMaxConnsPerSource     = 256
	DefaultSourcePrefixV6        = 64
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	DefaultHTTPReadTimeout       = 30 * time.Second
	DefaultHTTPWriteTimeout      = time.Minute
	DefaultHTTPIdleTimeout       = 30 * time.Second
	DefaultGRPCIdleTimeout       = 2 * time.Minute
	DefaultGRPCMaxConnectionAge  = time.Hour
	DefaultMaxStreamsPerConn     = 100
	// DefaultStreamTimeout is long enough for a slow but honest phone to
	// download a package of a few tens of KiB.
	DefaultStreamTimeout            = 10 * time.Minute
	DefaultMaxWatchStreams          = 64
	DefaultMaxWatchStreamsPerSource = 4
	// DefaultMemoryLimit keeps a gateway holding 10,000 slow downloads
	// under 512 MiB of RSS (issue 15; docs/deploy.md, "Capacity: slow
	// downloads"): the heap of held connections is mostly garbage
	// between collections, and credgw serve's GOGC=400 alone lets it
	// grow to five times the live data. It leaves room for what the Go runtime does
	// not count (PKCS#12 and SQLite in C, the PKCS#11 module).
	DefaultMemoryLimit = 384 << 20
)

// DefaultPolicy is id-fpki-common-authentication.
const DefaultPolicy = "2.16.840.1.101.3.2.1.3.13"

// configNow is the clock of the checks that depend on the date (tests set
// it).
var configNow = time.Now

// LoadConfig reads and checks a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b, filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	if err := c.secretConfigMode(path); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseConfig reads YAML; dir resolves relative paths.
func ParseConfig(b []byte, dir string) (*Config, error) {
	c, err := decodeConfig(b, dir)
	if err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// decodeConfig reads YAML into a Config with its defaults, unvalidated. A
// mistake in the file's shape (an unknown field, a list where a value
// goes) is said with its line and field, every one of them.
func decodeConfig(b []byte, dir string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("config: %s", readableYAMLError(err))
	}
	if root.Kind == 0 || len(root.Content) == 0 || root.Content[0].Tag == "!!null" {
		return nil, errors.New("config: the file is empty: start from the example in docs/config.md")
	}
	if errs := checkShape(root.Content[0], reflect.TypeOf(Config{}), ""); len(errs) > 0 {
		return nil, fmt.Errorf("config: %w", errors.Join(errs...))
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("config: %s (every field is listed in docs/config.md)", readableYAMLError(err))
	}
	c.dir = dir
	c.applyDefaults()
	return c, nil
}

func (c *Config) applyDefaults() {
	if c.Listen.PProf == "" {
		c.Listen.PProf = "loopback"
	}
	if c.Attest.Unattested == "" {
		c.Attest.Unattested = "allow"
	}
	if c.Attest.StatusMaxAge.Duration == 0 {
		c.Attest.StatusMaxAge.Duration = DefaultAttestStatusMaxAge
	}
	if c.Attest.RequireVerifiedBoot == nil {
		c.Attest.RequireVerifiedBoot = ptr(true)
	}
	if c.Attest.RequireDeviceLocked == nil {
		c.Attest.RequireDeviceLocked = ptr(true)
	}
	if c.GatewayID == "" {
		c.GatewayID = "credgw"
	}
	if c.Listen.GRPC == "" {
		c.Listen.GRPC = DefaultGRPCAddr
	}
	if c.TLS.MinVersion == "" {
		c.TLS.MinVersion = "1.2"
	}
	if c.Store.Driver == "" {
		c.Store.Driver = "sqlite"
	}
	if c.Store.DSN == "" && c.Store.Driver == "sqlite" {
		c.Store.DSN = "credgw.db"
	}
	if c.Store.MaxConns == 0 {
		c.Store.MaxConns = store.DefaultMaxConns
	}
	if len(c.PIV.Policies) == 0 {
		c.PIV.Policies = []string{DefaultPolicy}
	}
	if c.PIV.MaxStatusAge.Duration == 0 {
		c.PIV.MaxStatusAge.Duration = piv.DefaultMaxStatusAge
	}
	if c.PIV.OCSPTimeout.Duration == 0 {
		c.PIV.OCSPTimeout.Duration = piv.DefaultOCSPTimeout
	}
	if c.PIV.CRLTimeout.Duration == 0 {
		c.PIV.CRLTimeout.Duration = piv.DefaultCRLTimeout
	}
	if c.PIV.ChallengeTTL.Duration == 0 {
		c.PIV.ChallengeTTL.Duration = DefaultChallengeTTL
	}
	if c.PIV.SessionTTL.Duration == 0 {
		c.PIV.SessionTTL.Duration = DefaultSessionTTL
	}
	if c.PIV.PersonAttribute == "" {
		c.PIV.PersonAttribute = piv.DefaultPersonAttribute
	}
	c.Limits.Rates.applyDefaults()
	if c.Limits.MaxRecvBytes == 0 {
		c.Limits.MaxRecvBytes = DefaultMaxRecvBytes
	}
	if c.Limits.RPCTimeout.Duration == 0 {
		c.Limits.RPCTimeout.Duration = DefaultRPCTimeout
	}
	if c.Limits.ShutdownTimeout.Duration == 0 {
		c.Limits.ShutdownTimeout.Duration = DefaultShutdown
	}
	c.Limits.applyClientDefaults()
	if c.Portal.MaxConnectionAge.Duration == 0 {
		c.Portal.MaxConnectionAge.Duration = DefaultPortalMaxConnectionAge
	}
	if c.Portal.HandshakeTimeout.Duration == 0 {
		c.Portal.HandshakeTimeout.Duration = DefaultPortalHandshakeTimeout
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.CA.Name == "" {
		c.CA.Name = "issuing-ca"
	}
	if c.CA.KeyType == "" {
		c.CA.KeyType = "p256"
	}
	if c.CA.BaseURL == "" && c.Listen.HTTP != "" && c.Development {
		c.CA.BaseURL = "http://" + c.Listen.HTTP
	}
	if c.CA.Validity.Duration == 0 {
		c.CA.Validity.Duration = issuance.DefaultValidity
	}
	if c.Enroll.GatewayAddress == "" {
		c.Enroll.GatewayAddress = c.Listen.GRPC
	}
	if c.Enroll.PasswordDigits == 0 {
		c.Enroll.PasswordDigits = code.DefaultPasswordDigits
	}
	if c.Enroll.Lifetime.Duration == 0 {
		c.Enroll.Lifetime.Duration = activation.DefaultLifetime
	}
	if c.Enroll.MaxAttempts == 0 {
		c.Enroll.MaxAttempts = activation.DefaultMaxAttempts
	}
	if c.Enroll.MaxSets == 0 {
		c.Enroll.MaxSets = activation.DefaultMaxSets
	}
	if c.Enroll.ConfirmWindow.Duration == 0 {
		c.Enroll.ConfirmWindow.Duration = activation.DefaultConfirmWindow
	}
	if c.Escrow.KeyType == "" {
		c.Escrow.KeyType = string(issuance.EscrowRSA3072)
	}
	if c.Renewal.OpensAtPercent == 0 {
		c.Renewal.OpensAtPercent = activation.DefaultRenewalPercent
	}
	if c.Linkage.FirstCheck.Duration == 0 {
		c.Linkage.FirstCheck.Duration = lifecycle.DefaultFirstCheck
	}
	if c.Linkage.Interval.Duration == 0 {
		c.Linkage.Interval.Duration = lifecycle.DefaultInterval
	}
	if c.Linkage.MaxUnknown.Duration == 0 {
		c.Linkage.MaxUnknown.Duration = lifecycle.DefaultMaxUnknown
	}
	if c.Linkage.OnCardExpiry == "" {
		c.Linkage.OnCardExpiry = "keep"
	}
	if c.Linkage.OnUnknown == "" {
		c.Linkage.OnUnknown = lifecycle.DefaultOnUnknown
	}
	if c.Linkage.Concurrency == 0 {
		c.Linkage.Concurrency = lifecycle.DefaultConcurrency
	}
	if c.Webhook.MaxSkew.Duration == 0 {
		c.Webhook.MaxSkew.Duration = 5 * time.Minute
	}
	if c.Escrow.PoolSize == 0 {
		c.Escrow.PoolSize = 4
	}
}

var gatewayIDRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// validate checks every section; each problem is named by its field.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, check := range []func(func(string, ...any)){
		c.validateGeneral, c.validateListen, c.validateTLS, c.validateStore, c.validatePIV, c.validateLimits,
		c.validateCA, c.validateAttest, c.validateEnroll, c.validateRenewal, c.validateLinkage, c.Notify.Validate, c.validateWebhook,
		c.validateTelemetry,
	} {
		check(bad)
	}
	return errors.Join(errs...)
}

func ptr[T any](v T) *T { return &v }

// validateAttest checks the attestation section.
// DefaultAttestStatusMaxAge is attestation.status_max_age's default.
const DefaultAttestStatusMaxAge = 24 * time.Hour

func (c *Config) validateAttest(bad func(string, ...any)) {
	// Where an attestation decides anything (…3.41, or issuing at all),
	// the status list is required: leaked attestation keys of whole
	// device models are caught only through it.
	if c.CA.CertificateFile != "" && c.Attest.StatusFile == "" {
		switch {
		case c.CA.HardwareBackedDevices:
			bad("ca.hardware_backed_devices needs attestation.status_file: Google's attestation status list, fetched by a job " +
				"(leaked attestation keys are caught only through it; docs/config.md, attestation)")
		case c.Attest.Unattested == "refuse":
			bad("attestation.unattested: refuse needs attestation.status_file: Google's attestation status list, fetched by a job " +
				"(leaked attestation keys are caught only through it; docs/config.md, attestation)")
		}
	}
	if c.Attest.StatusMaxAge.Duration < 0 {
		bad("attestation.status_max_age: want a positive duration")
	}
	if u := c.Attest.Unattested; u != "allow" && u != "refuse" {
		bad("attestation.unattested %q: allow or refuse", u)
	}
	for _, l := range c.Attest.SecurityLevels {
		if _, err := attest.ParseSecurityLevel(l); err != nil {
			bad("attestation.security_levels: %q: trusted_environment, strongbox or software", l)
		}
	}
}

// AttestPolicy reads what the attestation section names: the roots (Google's
// when none are given), the status list, the levels and boot rules.
func (c *Config) AttestPolicy() (*attest.Policy, error) {
	p := &attest.Policy{RequireVerifiedBoot: *c.Attest.RequireVerifiedBoot, RequireDeviceLocked: *c.Attest.RequireDeviceLocked}
	var err error
	if len(c.Attest.AndroidRootFiles) == 0 {
		if p.Roots, err = attest.ParseRoots(attest.GoogleRootsPEM()); err != nil {
			return nil, err
		}
	}
	for _, f := range c.Attest.AndroidRootFiles {
		b, err := os.ReadFile(c.Path(f))
		if err != nil {
			return nil, fmt.Errorf("attestation.android_root_files: %w", err)
		}
		roots, err := attest.ParseRoots(b)
		if err != nil {
			return nil, fmt.Errorf("attestation.android_root_files: %s: %w", f, err)
		}
		p.Roots = append(p.Roots, roots...)
	}
	if c.Attest.StatusFile != "" {
		sf := &statusFile{path: c.Path(c.Attest.StatusFile), maxAge: c.Attest.StatusMaxAge.Duration, now: configNow}
		// A list that does not parse is a configuration error now; one
		// that is (or becomes) too old fails attestations closed later.
		if _, _, err := sf.load(); err != nil {
			return nil, fmt.Errorf("attestation.status_file: %w", err)
		}
		p.Status = sf.revoked
	}
	for _, l := range c.Attest.SecurityLevels {
		lvl, err := attest.ParseSecurityLevel(l)
		if err != nil {
			return nil, err
		}
		p.SecurityLevels = append(p.SecurityLevels, lvl)
	}
	return p, nil
}

// statusFile is the attestation status list file, read again when it
// changes and refused when older than maxAge.
type statusFile struct {
	path   string
	maxAge time.Duration
	now    func() time.Time
	mu     sync.Mutex
	mod    time.Time
	size   int64
	list   map[string]bool
}

func (f *statusFile) load() (map[string]bool, os.FileInfo, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.list != nil && st.ModTime().Equal(f.mod) && st.Size() == f.size {
		return f.list, st, nil
	}
	list, err := attest.LoadStatusList(f.path)
	if err != nil {
		return nil, nil, err
	}
	f.list, f.mod, f.size = list, st.ModTime(), st.Size()
	return list, st, nil
}

// revoked is attest.Policy.Status.
func (f *statusFile) revoked() (map[string]bool, error) {
	list, st, err := f.load()
	if err != nil {
		return nil, fmt.Errorf("%w: attestation.status_file: %v", attest.ErrStatusUnavailable, err)
	}
	if age := f.now().Sub(st.ModTime()); age > f.maxAge {
		return nil, fmt.Errorf("%w: attestation.status_file is %s old, past attestation.status_max_age (%s): the operator must refresh it",
			attest.ErrStatusUnavailable, age.Round(time.Minute), f.maxAge)
	}
	return list, nil
}

// validateGeneral checks gateway_id and log.
func (c *Config) validateGeneral(bad func(string, ...any)) {
	if !gatewayIDRe.MatchString(c.GatewayID) {
		bad("gateway_id %q: 1-64 of A-Z a-z 0-9 . _ : -", c.GatewayID)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level %q: debug, info, warn or error", c.Log.Level)
	}
}

// validateListen checks every listen address as serve will bind it, so
// that config check refuses what serve would: host:port (the host may
// be empty), the port a number from 0 to 65535 (0: any free port).
func (c *Config) validateListen(bad func(string, ...any)) {
	switch c.Listen.PProf {
	case "loopback", "any", "off":
	default:
		bad("listen.pprof %q: loopback, any or off", c.Listen.PProf)
	}
	var bound []struct{ name, host, port string }
	for _, l := range []struct{ name, addr string }{
		{"listen.grpc", c.Listen.GRPC},
		{"listen.http", c.Listen.HTTP},
		{"listen.management", c.Listen.Management},
		{"portal.listen", c.Portal.Listen},
		{"termination_webhook.listen", c.Webhook.Listen},
	} {
		if l.addr == "" && l.name != "listen.grpc" {
			continue // off
		}
		host, port, err := net.SplitHostPort(l.addr)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil {
			bad("%s %q: want host:port with a port from 0 to 65535, e.g. 127.0.0.1:8443", l.name, l.addr)
			continue
		}
		// Two listeners on one address: serve would fail with "address
		// already in use", as if another program had the port.
		for _, o := range bound {
			if port != "0" && port == o.port && (host == o.host || anyHost(host) || anyHost(o.host)) {
				bad("%s %q: %s listens there already: give each listener its own address or port", l.name, l.addr, o.name)
			}
		}
		bound = append(bound, struct{ name, host, port string }{l.name, host, port})
	}
	if d := c.Portal.MaxConnectionAge.Duration; d < time.Second || d > time.Hour {
		bad("portal.max_connection_age %s: between 1s and 1h", d)
	}
	if d := c.Portal.HandshakeTimeout.Duration; d < 5*time.Second || d > 10*time.Minute {
		bad("portal.handshake_timeout %s: between 5s and 10m", d)
	}
}

// anyHost reports whether a listen host is every address of the machine.
func anyHost(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }

// validateTLS checks tls and roles.
func (c *Config) validateTLS(bad func(string, ...any)) {
	if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
		bad("tls.cert_file and tls.key_file are required: credgw serves gRPC over TLS only")
	}
	if c.TLS.MinVersion != "1.2" && c.TLS.MinVersion != "1.3" {
		bad("tls.min_version %q: use 1.2 or 1.3", c.TLS.MinVersion)
	}
	if (len(c.Roles.Portal) > 0 || len(c.Roles.Admin) > 0) && len(c.TLS.ClientCAFiles) == 0 {
		bad("roles are configured but tls.client_ca_files is empty: client certificates could not be verified")
	}
	if len(c.TLS.ClientCRLFiles) > 0 && len(c.TLS.ClientCAFiles) == 0 {
		bad("tls.client_crl_files is set but tls.client_ca_files is empty: a CRL is checked against the CA that signed it")
	}
	for role, ms := range map[string][]ClientMatch{"portal": c.Roles.Portal, "admin": c.Roles.Admin} {
		for i, m := range ms {
			if m.SubjectCN == "" && m.SHA256 == "" && m.DNSName == "" {
				bad("roles.%s[%d]: set subject_cn, sha256 or dns_name", role, i)
			}
			if m.SHA256 != "" && !regexp.MustCompile(`^[0-9a-fA-F]{64}$`).MatchString(strings.ReplaceAll(m.SHA256, ":", "")) {
				bad("roles.%s[%d].sha256: want 64 hex digits", role, i)
			}
		}
	}
}

// validateStore checks the store section.
func (c *Config) validateStore(bad func(string, ...any)) {
	switch c.Store.Driver {
	case "sqlite":
	case "postgres":
		if c.Store.DSN == "" {
			bad("store.dsn is required with store.driver postgres")
		}
	default:
		bad("store.driver %q: sqlite or postgres", c.Store.Driver)
	}
	if c.Store.MaxConns < 1 || c.Store.MaxConns > 1000 {
		bad("store.max_conns %d: 1 to 1000", c.Store.MaxConns)
	}
	switch c.Store.SQLiteSynchronous {
	case "", "full":
	case "normal":
		if c.Store.Driver != "sqlite" {
			bad("store.sqlite_synchronous %q: only for store.driver sqlite (PostgreSQL's is synchronous_commit, in the server's settings)", c.Store.SQLiteSynchronous)
		}
	default:
		bad("store.sqlite_synchronous %q: full (the default) or normal", c.Store.SQLiteSynchronous)
	}
}

// validatePIV checks the piv section.
func (c *Config) validatePIV(bad func(string, ...any)) {
	if len(c.PIV.TrustAnchorFiles) == 0 {
		bad("piv.trust_anchor_files is required (e.g. the Federal Common Policy CA G2)")
	}
	for _, p := range c.PIV.Policies {
		if _, err := parseOID(p); err != nil {
			bad("piv.policies: %v", err)
		}
	}
	switch c.PIV.PersonAttribute {
	case "fascn", "upn", "email":
	default:
		bad("piv.person_attribute %q: use fascn, upn or email", c.PIV.PersonAttribute)
	}
	if d := c.PIV.MaxStatusAge.Duration; d < time.Second || d > 24*time.Hour {
		bad("piv.max_status_age %s: between 1s and 24h", d)
	}
	if d := c.PIV.ChallengeTTL.Duration; d < 10*time.Second || d > 5*time.Minute {
		bad("piv.challenge_ttl %s: between 10s and 5m", d)
	}
	if d := c.PIV.SessionTTL.Duration; d < time.Minute || d > 20*time.Minute {
		bad("piv.session_ttl %s: between 1m and 20m (SP 800-63B-4 §6.1.2.1)", d)
	}
}

// validateLimits checks the limits section.
func (c *Config) validateLimits(bad func(string, ...any)) {
	c.Limits.Rates.validate(bad)
	if c.Limits.NewWork < -1 || c.Limits.NewWork > 4096 {
		bad("limits.new_work %d: -1 (no limit), 0 (half the CPUs) or up to 4096", c.Limits.NewWork)
	}
	if c.Limits.MaxRecvBytes < 16<<10 || c.Limits.MaxRecvBytes > 64<<20 {
		bad("limits.max_recv_bytes %d: between 16384 and 67108864", c.Limits.MaxRecvBytes)
	}
	c.Limits.validateClients(bad)
}

func (l *LimitsConfig) applyClientDefaults() {
	if l.MaxConnsPerSource == 0 {
		l.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if l.SourcePrefixV6 == 0 {
		l.SourcePrefixV6 = DefaultSourcePrefixV6
	}
	for _, d := range []struct {
		v   *Duration
		def time.Duration
	}{
		{&l.HTTPReadHeaderTimeout, DefaultHTTPReadHeaderTimeout}, {&l.HTTPReadTimeout, DefaultHTTPReadTimeout},
		{&l.HTTPWriteTimeout, DefaultHTTPWriteTimeout}, {&l.HTTPIdleTimeout, DefaultHTTPIdleTimeout},
		{&l.GRPCIdleTimeout, DefaultGRPCIdleTimeout}, {&l.GRPCMaxConnectionAge, DefaultGRPCMaxConnectionAge},
		{&l.StreamTimeout, DefaultStreamTimeout},
	} {
		if d.v.Duration == 0 {
			d.v.Duration = d.def
		}
	}
	if l.MaxStreamsPerConn == 0 {
		l.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if l.MaxWatchStreams == 0 {
		l.MaxWatchStreams = DefaultMaxWatchStreams
	}
	if l.MaxWatchStreamsPerSource == 0 {
		l.MaxWatchStreamsPerSource = DefaultMaxWatchStreamsPerSource
	}
	if l.MemoryLimit == 0 {
		l.MemoryLimit = DefaultMemoryLimit
	}
}

// validateClients checks what slow and idle clients may hold.
func (l *LimitsConfig) validateClients(bad func(string, ...any)) {
	if n := l.MaxConnsPerSource; n < -1 || n > 1<<20 {
		bad("limits.max_conns_per_source %d: -1 (no limit) or 1 to 1048576", n)
	}
	if n := l.SourcePrefixV6; n < 16 || n > 128 {
		bad("limits.source_prefix_v6 %d: a prefix length from 16 to 128 (64, a /64, by default)", n)
	}
	for _, d := range []struct {
		name     string
		v        time.Duration
		min, max time.Duration
	}{
		{"http_read_header_timeout", l.HTTPReadHeaderTimeout.Duration, 100 * time.Millisecond, 5 * time.Minute},
		{"http_read_timeout", l.HTTPReadTimeout.Duration, 100 * time.Millisecond, 30 * time.Minute},
		{"http_write_timeout", l.HTTPWriteTimeout.Duration, 100 * time.Millisecond, 30 * time.Minute},
		{"http_idle_timeout", l.HTTPIdleTimeout.Duration, 100 * time.Millisecond, time.Hour},
		{"grpc_idle_timeout", l.GRPCIdleTimeout.Duration, time.Second, 24 * time.Hour},
		{"grpc_max_connection_age", l.GRPCMaxConnectionAge.Duration, time.Second, 7 * 24 * time.Hour},
		{"stream_timeout", l.StreamTimeout.Duration, 100 * time.Millisecond, 24 * time.Hour},
	} {
		if d.v < d.min || d.v > d.max {
			bad("limits.%s %s: between %s and %s", d.name, d.v, d.min, d.max)
		}
	}
	if l.HTTPReadTimeout.Duration < l.HTTPReadHeaderTimeout.Duration {
		bad("limits.http_read_timeout %s: at least http_read_header_timeout (%s), which it includes", l.HTTPReadTimeout.Duration, l.HTTPReadHeaderTimeout.Duration)
	}
	if n := l.MaxStreamsPerConn; n < 1 || n > 10000 {
		bad("limits.max_streams_per_conn %d: 1 to 10000", n)
	}
	if n := l.MemoryLimit; n != -1 && (n < 64<<20 || n > 1<<40) {
		bad("limits.memory_limit %d: -1 (none) or 67108864 (64 MiB) to 1 TiB, in bytes", n)
	}
	if n := l.MaxWatchStreams; n < -1 || n > 1<<20 {
		bad("limits.max_watch_streams %d: -1 (no limit) or 1 to 1048576", n)
	}
	if n := l.MaxWatchStreamsPerSource; n < -1 || n > 1<<20 {
		bad("limits.max_watch_streams_per_source %d: -1 (no limit) or 1 to 1048576", n)
	}
}

// validateCA checks the ca and escrow sections.
func (c *Config) validateCA(bad func(string, ...any)) {
	if c.CA.CertificateFile != "" {
		if (c.CA.KeyURI == "") == (c.CA.KeyFile == "") {
			bad("ca: set exactly one of key_uri (HSM) and key_file")
		}
		if c.Listen.HTTP == "" {
			bad("ca: listen.http is required: it serves the CRL, OCSP and the CA certificate")
		}
		switch {
		case c.CA.BaseURL == "":
			bad("ca.base_url is required: the public http URL where relying parties reach listen.http; it goes into every certificate (AIA, CRL DP). Only a development environment (development: true) may leave it out")
		case !strings.HasPrefix(c.CA.BaseURL, "http://"):
			bad("ca.base_url %q: an http URL (the profiles require http AIA and CRL DP)", c.CA.BaseURL)
		case !c.Development && loopbackURL(c.CA.BaseURL):
			bad("ca.base_url %q: a loopback address, which no relying party reaches; give the public name of listen.http (development: true allows it)", c.CA.BaseURL)
		}
		if c.CA.Name == "root" {
			bad("ca.name root: reserved for the root's CRL and certificate (%s, %s)", issuance.RootCRLPath, issuance.RootCertPath)
		}
		if d := c.CA.Validity.Duration; d < time.Hour || d > 1096*24*time.Hour {
			bad("ca.validity %s: between 1h and 1096 days (26304h)", d)
		}
		if (c.Escrow.KEKURI == "") == (c.Escrow.KEKFile == "") {
			bad("escrow: set exactly one of kek_uri (HSM) and kek_file: key-management keys are escrowed before issuance")
		}
		// Keys in one token told apart by their id (CKA_ID): the issuing
		// key, each retired key and the escrow KEK each need their own.
		ids := map[string]string{}
		sameKey := func(field, uri string) {
			u, err := pkcs11.ParseURI(uri)
			if uri == "" || err != nil {
				return
			}
			slot := ""
			if u.SlotID != nil {
				slot = fmt.Sprint(*u.SlotID)
			}
			k := u.Token + "\x00" + u.Serial + "\x00" + slot + "\x00" + string(u.ID)
			if other, ok := ids[k]; ok {
				bad("%s names the key id=%x of token %q that %s already uses: give each key its own id", field, u.ID, u.Token, other)
				return
			}
			ids[k] = field
		}
		sameKey("ca.key_uri", c.CA.KeyURI)
		sameKey("escrow.kek_uri", c.Escrow.KEKURI)
		for i, r := range c.CA.Retired {
			sameKey(fmt.Sprintf("ca.retired[%d].key_uri", i), r.KeyURI)
		}
		names := map[string]bool{c.CA.Name: true, "root": true}
		for i, r := range c.CA.Retired {
			field := fmt.Sprintf("ca.retired[%d]", i)
			switch {
			case r.Name == "" || strings.ContainsAny(r.Name, "/ \t"):
				bad("%s.name %q: the ca.name the earlier key had (a word: its certificates' OCSP and CRL URLs name it)", field, r.Name)
			case names[r.Name]:
				bad("%s.name %q: taken by ca.name, the root or another retired key: each key answers at its own URLs, so a re-keyed CA takes a new ca.name", field, r.Name)
			}
			names[r.Name] = true
			if r.CertificateFile == "" {
				bad("%s.certificate_file is required: the earlier key's issuing CA certificate", field)
			}
			if (r.KeyURI == "") == (r.KeyFile == "") {
				bad("%s: set exactly one of key_uri (HSM) and key_file: the earlier key signs its certificates' CRLs and OCSP answers", field)
			}
		}
	}
	if c.CA.CertificateFile != "" && c.Enroll.TLSAnchorFile == "" {
		bad("enrollment.tls_anchor_file is required with a ca: devices pin the gateway's TLS anchor from the QR code")
	}
	switch c.CA.KeyType {
	case "p256", "p384", "rsa3072":
	default:
		bad("ca.key_type %q: p256, p384 or rsa3072", c.CA.KeyType)
	}
	switch c.Escrow.KeyType {
	case "rsa3072", "p256":
	case "rsa2048":
		// Common Policy §6.1.5: no RSA-2048 key in a certificate valid
		// past 2030-12-31.
		if end := configNow().Add(c.CA.Validity.Duration); end.After(issuance.RSA2048Until) {
			bad("escrow.key_type rsa2048: encryption certificates issued now with ca.validity %s would be valid until %s, past 2030-12-31, when RSA-2048 is no longer allowed (Common Policy §6.1.5): use rsa3072 or p256",
				c.CA.Validity.Duration, end.UTC().Format(time.DateOnly))
		}
	default:
		bad("escrow.key_type %q: rsa3072, rsa2048 or p256", c.Escrow.KeyType)
	}
	if c.Escrow.PoolSize < 0 || c.Escrow.PoolSize > 64 {
		bad("escrow.pool_size %d: 0 to 64", c.Escrow.PoolSize)
	}
}

// validateEnroll checks the enrollment section.
func (c *Config) validateEnroll(bad func(string, ...any)) {
	if d := c.Enroll.PasswordDigits; d < 6 || d > 12 {
		bad("enrollment.password_digits %d: 6 to 12", d)
	}
	if d := c.Enroll.Lifetime.Duration; d < time.Minute || d > 10*time.Minute {
		bad("enrollment.lifetime %s: 1m to 10m (SP 800-63B-4 §6.1.2.4)", d)
	}
	if n := c.Enroll.MaxAttempts; n < 1 || n > 10 {
		bad("enrollment.max_attempts %d: 1 to 10", n)
	}
	if n := c.Enroll.MaxSets; n < 1 || n > 100 {
		bad("enrollment.max_credential_sets %d: 1 to 100", n)
	}
	if d := c.Enroll.ConfirmWindow.Duration; d < time.Minute || d > 24*time.Hour {
		bad("enrollment.confirm_window %s: 1m to 24h", d)
	}
	// Devices dial this address from the QR code and check that the
	// gateway's certificate names its host.
	if c.CA.CertificateFile != "" {
		host, _, err := net.SplitHostPort(c.Enroll.GatewayAddress)
		ip, ipErr := netip.ParseAddr(host)
		switch {
		case err != nil:
			bad("enrollment.gateway_address %q: host:port, the name and port devices dial (the load balancer's), e.g. credgw.agency.example:8443", c.Enroll.GatewayAddress)
		case host == "" || ipErr == nil && ip.IsUnspecified():
			bad("enrollment.gateway_address %q: devices cannot dial every address (the default is listen.grpc): give the name and port they dial, e.g. credgw.agency.example:8443", c.Enroll.GatewayAddress)
		}
	}
	// Every QR code must fit the version phones read off a screen: checked
	// here, not at the first enrollment (which would fail after storing it).
	widest := code.Payload{Gateway: c.Enroll.GatewayAddress, ID: strings.Repeat("A", activationIDLen),
		Secret: make([]byte, code.SecretSize), Pin: make([]byte, 32)}.String()
	if v, err := code.QRVersion(widest); err != nil || v > code.MaxQRVersion {
		bad("enrollment.gateway_address %q makes QR codes larger than version %d (what a phone reads off a screen): shorten it (%d characters)",
			c.Enroll.GatewayAddress, code.MaxQRVersion, len(c.Enroll.GatewayAddress))
	}
}

// activationIDLen is the length of an activation id in a QR code (16
// random bytes, base64url: activation.randomID).
const activationIDLen = 22

// validateRenewal checks the renewal section.
func (c *Config) validateRenewal(bad func(string, ...any)) {
	if p := c.Renewal.OpensAtPercent; p < 50 || p > 95 {
		bad("renewal.opens_at_percent %d: between 50 and 95", p)
	}
}

// validateLinkage checks the linkage section.
func (c *Config) validateLinkage(bad func(string, ...any)) {
	week := 7 * 24 * time.Hour
	if d := c.Linkage.FirstCheck.Duration; d < time.Minute || d > week {
		bad("linkage.first_check %s: between 1m and 168h (SP 800-157r1 §2.4 wants the first check within 7 days)", d)
	}
	if d := c.Linkage.Interval.Duration; d < time.Hour || d > week {
		bad("linkage.interval %s: between 1h and 168h", d)
	}
	if d := c.Linkage.MaxUnknown.Duration; d < time.Hour {
		bad("linkage.max_unknown %s: at least 1h", d)
	}
	if c.Linkage.OnCardExpiry != "keep" && c.Linkage.OnCardExpiry != "revoke" {
		bad("linkage.on_card_expiry %q: keep or revoke", c.Linkage.OnCardExpiry)
	}
	if c.Linkage.OnUnknown != "alert" && c.Linkage.OnUnknown != "revoke" {
		bad("linkage.on_unknown %q: alert or revoke", c.Linkage.OnUnknown)
	}
	if n := c.Linkage.Concurrency; n < 1 || n > 32 {
		bad("linkage.concurrency %d: between 1 and 32", n)
	}
}

// validateWebhook checks the termination_webhook section.
func (c *Config) validateWebhook(bad func(string, ...any)) {
	w := c.Webhook
	if w.SecretFile != "" && w.Listen == "" && c.Listen.Management == "" {
		bad("termination_webhook: no listener: set termination_webhook.listen (where the identity system reaches it) or listen.management")
	}
	if (w.TLSCertFile == "") != (w.TLSKeyFile == "") {
		bad("termination_webhook: set both tls_cert_file and tls_key_file, or neither")
	}
	if w.TLSCertFile != "" && w.Listen == "" {
		bad("termination_webhook.tls_cert_file: needs termination_webhook.listen (the webhook's own listener)")
	}
	if w.Listen != "" && w.SecretFile == "" {
		bad("termination_webhook.listen: needs termination_webhook.secret_file (the key requests are signed with)")
	}
	if d := c.Webhook.MaxSkew.Duration; d < 10*time.Second || d > 15*time.Minute {
		bad("termination_webhook.max_skew %s: between 10s and 15m", d)
	}
}

// loopbackURL reports whether u's host is a loopback or unspecified
// address, or localhost.
func loopbackURL(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := pu.Hostname()
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// Path resolves p against the config file's directory.
//
// A path that begins with $CREDENTIALS_DIRECTORY/ is under the directory
// systemd hands a unit's credentials in (LoadCredential=), whatever the
// unit's name: the service's and a `systemd-run` of config check alike.
func (c *Config) Path(p string) string {
	if rest, ok := strings.CutPrefix(p, credentialsDir); ok {
		if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
			return filepath.Join(dir, rest)
		}
		return p // not in a unit: the open fails naming it
	}
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// credentialsDir begins a path under systemd's credentials directory.
const credentialsDir = "$CREDENTIALS_DIRECTORY/"

// credentialsDirectoryUnset explains a config naming files under
// $CREDENTIALS_DIRECTORY read outside a systemd unit with credentials.
func credentialsDirectoryUnset(text []byte) error {
	if os.Getenv("CREDENTIALS_DIRECTORY") != "" {
		return nil
	}
	// The values the YAML holds, not its text: comments (the packaged
	// config's name the variable) and quoting are the parser's.
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil // decodeConfig reports it
	}
	var named func(n *yaml.Node) bool
	named = func(n *yaml.Node) bool {
		if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, credentialsDir) {
			return true
		}
		return slices.ContainsFunc(n.Content, named)
	}
	if !named(&doc) {
		return nil
	}
	return errors.New("the config names files under $CREDENTIALS_DIRECTORY, which systemd sets only inside a unit with LoadCredential=: " +
		"run this through the unit's credentials (systemd-run -p User=credgw -p LoadCredential=..., docs/deploy.md) " +
		"or give it a copy of the config that names the files in /etc/credgw")
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%q is not a dotted OID", s)
	}
	oid := make(asn1.ObjectIdentifier, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a dotted OID", s)
		}
		oid[i] = n
	}
	return oid, nil
}

// ReadCertificateFiles reads every certificate of PEM files (a file with
// none is an error): for the CLI's trust anchors.
func ReadCertificateFiles(paths []string) ([]*x509.Certificate, error) { return readCerts(paths) }

// readCerts reads every certificate of PEM files.
func readCerts(paths []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		n := 0
		for {
			var block *pem.Block
			block, b = pem.Decode(b)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			out = append(out, c)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%s holds no PEM certificate", p)
		}
	}
	return out, nil
}

// OpenStore opens the configured store for serve. SQLite migrates itself
// and is held by one process at a time (a second one is refused:
// store.InUseError); a SQLite database that is not there is refused, not
// made (CreateStore makes it), and so is one a newer credgw migrated.
// PostgreSQL is migrated by `credgw migrate` (migrate=true), and serve
// refuses an older schema.
func OpenStore(ctx context.Context, cfg *Config, migrate bool) (*store.DB, error) {
	if cfg.Store.Driver == "postgres" {
		return store.OpenPostgres(ctx, cfg.Store.DSN, store.PostgresOptions{MaxConns: cfg.Store.MaxConns, Migrate: migrate})
	}
	path := cfg.Path(cfg.Store.DSN)
	st, err := store.OpenSQLite(ctx, path, append(sqliteOptions(cfg), store.MustExist())...)
	if errors.Is(err, store.ErrNoDatabase) {
		return nil, noSQLiteDatabase(err)
	}
	if err != nil {
		return nil, err
	}
	// One file, one gateway: no rolling upgrade excuses an older credgw
	// on a newer schema (it would serve without what the newer migrations
	// added, such as retired escrowed keys).
	if err := notNewerSQLite(ctx, st, path); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// noSQLiteDatabase says what to do about a SQLite database that is not
// there (store.ErrNoDatabase).
func noSQLiteDatabase(err error) error {
	return fmt.Errorf("%w. A new installation makes its database with `credgw migrate --config credgw.yaml` (credgw dev init makes its own); "+
		"if credgw ran before with this configuration, its database is missing (a restore not finished, a volume not mounted, "+
		"store.dsn mistyped): restore it. serve does not start on a new, empty database: its CRLs would no longer list the revocations",
		err)
}

// notNewerSQLite refuses a SQLite schema a newer credgw migrated.
func notNewerSQLite(ctx context.Context, st *store.DB, path string) error {
	cur, want, err := st.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if cur > want {
		return fmt.Errorf("the SQLite database %s is at schema version %d, newer than this credgw (%d): a newer credgw migrated it, "+
			"and credgw does not migrate down. Run the newer credgw, or restore the backup taken before the upgrade to go back", path, cur, want)
	}
	return nil
}

// CreateStore opens the configured store for `credgw migrate` and dev init:
// it brings the schema up to date and makes a SQLite database that is not
// there (created reports that it did).
func CreateStore(ctx context.Context, cfg *Config) (st *store.DB, created bool, err error) {
	if cfg.Store.Driver == "postgres" {
		st, err := store.OpenPostgres(ctx, cfg.Store.DSN, store.PostgresOptions{MaxConns: cfg.Store.MaxConns, Migrate: true})
		return st, false, err
	}
	path := cfg.Path(cfg.Store.DSN)
	fi, err := os.Stat(path)
	created = errors.Is(err, fs.ErrNotExist) || err == nil && fi.Size() == 0
	st, err = store.OpenSQLite(ctx, path, sqliteOptions(cfg)...)
	return st, created, err
}

func sqliteOptions(cfg *Config) []store.SQLiteOption {
	var opts []store.SQLiteOption
	if cfg.Store.SQLiteSynchronous == "normal" {
		opts = append(opts, store.SyncNormal())
	}
	return opts
}

// BackupStore writes a checked copy of the configured SQLite store to out,
// beside a running gateway and whatever its schema version (the backup an
// upgrade takes before it migrates), and returns the copy's schema version.
func BackupStore(ctx context.Context, cfg *Config, out string) (int64, error) {
	if cfg.Store.Driver == "postgres" {
		return 0, errors.New("a PostgreSQL store is backed up with PostgreSQL's tools (pg_dump, or base backups and WAL archiving): see docs/key-ceremony.md")
	}
	return store.BackupSQLite(ctx, cfg.Path(cfg.Store.DSN), out)
}

// RestoreStore puts a backup in place of the configured SQLite database,
// the gateway stopped (store.RestoreSQLite), and returns where the
// database it replaced was kept.
func RestoreStore(ctx context.Context, cfg *Config, backup string) (string, error) {
	if cfg.Store.Driver == "postgres" {
		return "", errors.New("a PostgreSQL store is restored with PostgreSQL's tools (a base backup and the archived WAL): see docs/key-ceremony.md")
	}
	return store.RestoreSQLite(ctx, backup, cfg.Path(cfg.Store.DSN))
}

// OpenStoreReadOnly opens the configured store to read it beside a running
// gateway (`credgw audit`): SQLite without the lock OpenStore takes, and
// without migrating.
func OpenStoreReadOnly(ctx context.Context, cfg *Config) (*store.DB, error) {
	if cfg.Store.Driver == "postgres" {
		return OpenStore(ctx, cfg, false)
	}
	return store.OpenSQLiteReadOnly(ctx, cfg.Path(cfg.Store.DSN))
}

// secretConfigMode checks the config file at path as a secret file
// (notify.ReadSecretFile's rule) when it holds a secret itself: the
// database's password in store.dsn, or a pin-value= in a key URI. Every
// file the config names is checked so; a config holding none of them may
// stay readable.
func (c *Config) secretConfigMode(path string) error {
	var what []string
	if dsnHasPassword(c.Store.DSN) {
		what = append(what, "store.dsn's password")
	}
	uris := []string{c.CA.KeyURI, c.Escrow.KEKURI}
	for _, r := range c.CA.Retired {
		uris = append(uris, r.KeyURI)
	}
	for _, u := range uris {
		if strings.Contains(u, "pin-value=") {
			what = append(what, "an HSM PIN (pin-value=)")
			break
		}
	}
	if len(what) == 0 {
		return nil
	}
	if _, err := notify.ReadSecretFile(path, "config"); err != nil {
		return fmt.Errorf("%w (it holds %s: put them in files of their own, e.g. pin-source= and PGPASSFILE, or make it 0600)",
			err, strings.Join(what, " and "))
	}
	return nil
}

// dsnHasPassword tells whether a PostgreSQL DSN, as a URL or as
// keyword=value pairs, carries a password.
func dsnHasPassword(dsn string) bool {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		_, ok := u.User.Password()
		return ok || u.Query().Get("password") != ""
	}
	for _, f := range strings.Fields(dsn) {
		if k, _, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == "password" {
			return true
		}
	}
	return false
}
