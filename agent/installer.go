package agent

import (
	"context"
	"crypto"

	"github.com/credgw/credgw/activation/code"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// Package is a downloaded credential package whose SHA-256 matched the
// gateway's, as Options.Install receives it: nothing in it is verified
// beyond that.
type Package struct {
	// CredentialPackage is the package; its Manifest lists what it holds
	// (Item and CheckManifest check the items against it).
	CredentialPackage *credgwv1.CredentialPackage
	// Keys are the device keys by profile, which the package's
	// certificates must certify.
	Keys map[credgwv1.Profile]crypto.Signer
	// KeyIDs are the keys' CKA_IDs on Options.Keystore (empty without a
	// keystore), for storing a certificate beside its key.
	KeyIDs map[credgwv1.Profile][]byte
	// Result is what Redeem returns: an installer notes what it installed
	// (Serials, Files, Certificates, KeyHistory).
	Result *Result
	// Dir is the staging directory beside Options.OutDir: the files an
	// installer writes there and lists in Result.Files are moved into
	// OutDir once it returned nil and the gateway confirmed; otherwise
	// they are removed.
	Dir string
}

// Manifest is the package's manifest.
func (p *Package) Manifest() *credgwv1.Manifest { return p.CredentialPackage.GetManifest() }

// Item is the item a manifest entry names: it must be in the package and,
// except for the chain, match the entry's size and SHA-256.
func (p *Package) Item(m *credgwv1.ManifestItem) (*credgwv1.PackageItem, error) {
	return code.Wrap(p.CredentialPackage).Item(m)
}

// CheckManifest: every item the manifest lists is in the package and
// matches it (Item).
func (p *Package) CheckManifest() error { return code.Wrap(p.CredentialPackage).CheckManifest() }

// customInstall hands the package to Options.Install.
func customInstall(ctx context.Context, raw []byte, keys map[credgwv1.Profile]crypto.Signer, keyIDs map[credgwv1.Profile][]byte, o Options, res *Result) error {
	pkg, err := code.ParsePackage(raw)
	if err != nil {
		return err
	}
	return o.Install(ctx, &Package{CredentialPackage: pkg.CredentialPackage, Keys: keys, KeyIDs: keyIDs, Result: res, Dir: o.OutDir})
}
