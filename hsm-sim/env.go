package hsmsim

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/credgw/credgw/pkcs11"
)

// ErrNotInitialized means the directory holds no hsm-sim environment.
var ErrNotInitialized = errors.New("hsmsim: not an hsm-sim environment (run `credgw hsm-sim init --dir DIR --url URL` first)")

const stateFile = "state.json"

// Env is an hsm-sim environment in a directory.
type Env struct {
	Dir string
	// BaseURL is what the cards' AIA and CRL DP point at, and where
	// `hsm-sim serve` listens.
	BaseURL string
	// Clock is the issuer's time for OCSP answers, CRLs and revocations
	// (nil: the real time); tests with an injected clock set it.
	Clock func() time.Time

	trusted   *issuer
	untrusted *issuer

	cacheMu sync.Mutex
	cached  *state      // the last state read by sharedState
	cacheAt os.FileInfo // its file, as it was then
}

// state is the environment's persistent record: its cards and every
// certificate issued, with revocations. It is small; every reader reads it
// whole, so `serve` reflects a revocation made by another process at once.
type state struct {
	Version int                  `json:"version"`
	BaseURL string               `json:"base_url"`
	Cards   map[string]*CardInfo `json:"cards"`
	// Certs maps issuer name → serial (hex) → record.
	Certs map[string]map[string]*certRecord `json:"certs"`
}

type certRecord struct {
	Card      string     `json:"card"`
	Slot      string     `json:"slot"`
	NotAfter  time.Time  `json:"not_after"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Reason    int        `json:"reason,omitempty"`
}

// Init creates an environment in dir (which must be empty or absent) whose
// issuer publishes status at baseURL (http://127.0.0.1:PORT).
func Init(dir, baseURL string) (*Env, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("hsmsim: --url %q: give an http URL with host and port and no path, e.g. http://127.0.0.1:8089 (the PIV profile requires http AIA and CRL DP)", baseURL)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("hsmsim: --url %q: give a port", baseURL)
	}
	baseURL = strings.TrimSuffix(baseURL, "/")
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("hsmsim: %s is not empty: choose a new directory or remove it", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hsmsim: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := pkcs11.WriteSoftHSMConfig(abs); err != nil {
		return nil, err
	}
	e := &Env{Dir: abs, BaseURL: baseURL}
	if e.trusted, err = newIssuerPair(abs, trustedIssuer, baseURL); err != nil {
		return nil, err
	}
	if e.untrusted, err = newIssuerPair(abs, untrustedIssuer, baseURL); err != nil {
		return nil, err
	}
	st := &state{Version: 1, BaseURL: baseURL, Cards: map[string]*CardInfo{}, Certs: map[string]map[string]*certRecord{}}
	if err := e.writeState(st); err != nil {
		return nil, err
	}
	return e, nil
}

// Load opens the environment in dir.
func Load(dir string) (*Env, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: abs}
	st, err := e.readState()
	if err != nil {
		return nil, err
	}
	e.BaseURL = st.BaseURL
	if e.trusted, err = loadIssuer(abs, trustedIssuer); err != nil {
		return nil, err
	}
	if e.untrusted, err = loadIssuer(abs, untrustedIssuer); err != nil {
		return nil, err
	}
	return e, nil
}

// SoftHSMConfig is the path of the environment's softhsm2.conf.
func (e *Env) SoftHSMConfig() string { return filepath.Join(e.Dir, "softhsm2.conf") }

// OpenModule points SOFTHSM2_CONF at the environment and opens SoftHSM. The
// variable is read when the library initialises, so this must come before
// anything else in the process opens SoftHSM.
func (e *Env) OpenModule() (*pkcs11.Module, error) {
	if err := os.Setenv("SOFTHSM2_CONF", e.SoftHSMConfig()); err != nil {
		return nil, err
	}
	path, err := pkcs11.SoftHSMModule()
	if err != nil {
		return nil, err
	}
	return pkcs11.OpenModule(path)
}

// Roots returns the trust anchor of the simulated card issuer: configure it
// as credgw's PIV trust anchor.
func (e *Env) Root() *x509.Certificate { return e.trusted.root }

// IssuingCA returns the simulated PIV card issuing CA certificate.
func (e *Env) IssuingCA() *x509.Certificate { return e.trusted.ca }

// UntrustedRoot is the root of the issuer behind the "untrusted" variant.
func (e *Env) UntrustedRoot() *x509.Certificate { return e.untrusted.root }

// TrustPool is a pool holding Root.
func (e *Env) TrustPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.trusted.root)
	return p
}

// lock serialises state changes between processes (`card new` and `card
// revoke` may run while `serve` reads).
func (e *Env) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(e.Dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// sharedState is the state for readers that change nothing (the OCSP
// and CRL responders): read again only when the file changed (writeState
// renames a new file into place), since a responder that parses every
// card's record per request makes a bench of many cards measure itself.
func (e *Env) sharedState() (*state, error) {
	fi, err := os.Stat(filepath.Join(e.Dir, stateFile))
	if err != nil {
		return e.readState()
	}
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	if e.cached != nil && os.SameFile(fi, e.cacheAt) && fi.ModTime().Equal(e.cacheAt.ModTime()) && fi.Size() == e.cacheAt.Size() {
		return e.cached, nil
	}
	st, err := e.readState()
	if err != nil {
		return nil, err
	}
	e.cached, e.cacheAt = st, fi
	return st, nil
}

func (e *Env) readState() (*state, error) {
	b, err := os.ReadFile(filepath.Join(e.Dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotInitialized, e.Dir)
	}
	if err != nil {
		return nil, err
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("hsmsim: %s/%s: %w", e.Dir, stateFile, err)
	}
	if st.Cards == nil {
		st.Cards = map[string]*CardInfo{}
	}
	if st.Certs == nil {
		st.Certs = map[string]map[string]*certRecord{}
	}
	return st, nil
}

// writeState replaces the state file atomically.
func (e *Env) writeState(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(e.Dir, stateFile), b, 0o600)
}

// update applies fn to the state under the environment lock.
func (e *Env) update(fn func(*state) error) error {
	unlock, err := e.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := e.readState()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	return e.writeState(st)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// signerFor returns the issuer by name.
func (e *Env) issuerByName(name string) *issuer {
	switch name {
	case trustedIssuer:
		return e.trusted
	case untrustedIssuer:
		return e.untrusted
	}
	return nil
}

func (e *Env) now() time.Time {
	if e.Clock != nil {
		return e.Clock()
	}
	return time.Now()
}
