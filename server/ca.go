package server

import (
	"context"
	"crypto"
	"fmt"
	"os"
	"path/filepath"

	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
)

// hsm opens PKCS#11 tokens for the CA key and the escrow KEK, once each.
type hsm struct {
	cfg    *Config
	tokens map[string]*pkcs11.Token
}

func newHSM(cfg *Config) *hsm { return &hsm{cfg: cfg, tokens: map[string]*pkcs11.Token{}} }

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
	}
	return u, nil
}

func (h *hsm) token(ctx context.Context, u *pkcs11.URI) (*pkcs11.Token, error) {
	key := u.Token + "\x00" + u.Serial
	if t, ok := h.tokens[key]; ok {
		return t, nil
	}
	if h.cfg.HSM.SoftHSM2Conf != "" {
		if err := os.Setenv("SOFTHSM2_CONF", h.cfg.Path(h.cfg.HSM.SoftHSM2Conf)); err != nil {
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
	t, err := pkcs11.OpenURI(ctx, u, module)
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
	if h.cfg.CA.KeyFile != "" {
		k, err := issuance.ReadKeyFile(h.cfg.Path(h.cfg.CA.KeyFile))
		return k, nil, nil, err
	}
	u, err := h.parseKeyURI("ca.key_uri", h.cfg.CA.KeyURI)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err := h.token(ctx, u)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca.key_uri: %w", err)
	}
	s, err := t.Signer(ctx, pkcs11.KeyRef{ID: u.ID, Label: u.Object})
	if err != nil {
		return nil, t, u.ID, fmt.Errorf("ca.key_uri: %w", err)
	}
	return s, t, u.ID, nil
}

func (h *hsm) kek(ctx context.Context) (issuance.KEK, string, error) {
	if h.cfg.Escrow.KEKFile != "" {
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
		return nil, "", fmt.Errorf("escrow.kek_uri: %w", err)
	}
	return k, u.Token + "/" + fmt.Sprintf("%x", u.ID), nil
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
	ca, err := issuance.NewCA(issuance.Config{
		Name: cfg.CA.Name, Chain: certs, Signer: signer, Store: st, BaseURL: cfg.CA.BaseURL,
		Validity: cfg.CA.Validity.Duration, HardwareBackedDevices: cfg.CA.HardwareBackedDevices,
		Templates: templates, Now: opts.now,
	})
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

// InitCA is `credgw ca init`: it makes the root and issuing CA the config
// names, with the issuing key generated in the HSM token of ca.key_uri (or a
// key file), the root key in a file beside the root certificate, and the
// escrow KEK in the HSM when escrow.kek_uri names one.
func InitCA(ctx context.Context, cfg *Config, organization string) (*issuance.InitResult, error) {
	if cfg.CA.CertificateFile == "" || len(cfg.CA.ChainFiles) == 0 {
		return nil, fmt.Errorf("ca init: the config needs ca.certificate_file and ca.chain_files (the root)")
	}
	h := newHSM(cfg)
	defer h.close()
	opts := issuance.InitOptions{Dir: cfg.Path(dirOf(cfg.CA.CertificateFile)), Organization: organization, KeyType: issuance.KeyAlgorithm(cfg.CA.KeyType)}
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
	if err := placeCert(res.IssuingFile, cfg.Path(cfg.CA.CertificateFile)); err != nil {
		return nil, err
	}
	if err := placeCert(res.RootFile, cfg.Path(cfg.CA.ChainFiles[0])); err != nil {
		return nil, err
	}
	if res.IssuingKeyFile != "" && cfg.CA.KeyFile != "" {
		if err := placeCert(res.IssuingKeyFile, cfg.Path(cfg.CA.KeyFile)); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Escrow.KEKURI != "":
		u, err := h.parseKeyURI("escrow.kek_uri", cfg.Escrow.KEKURI)
		if err != nil {
			return nil, err
		}
		t, err := h.token(ctx, u)
		if err != nil {
			return nil, err
		}
		if _, err := t.AESKey(ctx, pkcs11.KeyRef{ID: u.ID}); err != nil {
			if _, err := t.GenerateAESKey(ctx, pkcs11.KeyRef{ID: u.ID, Label: "credgw escrow KEK"}); err != nil {
				return nil, fmt.Errorf("escrow KEK: %w", err)
			}
		}
	case cfg.Escrow.KEKFile != "":
		if _, err := os.Stat(cfg.Path(cfg.Escrow.KEKFile)); os.IsNotExist(err) {
			if err := issuance.WriteFileKEK(cfg.Path(cfg.Escrow.KEKFile)); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
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
