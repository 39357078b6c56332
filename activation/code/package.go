package code

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/protobuf/proto"
)

// PackageBuilder assembles a credential package on the gateway: its items,
// and the manifest that names each with its size and SHA-256.
type PackageBuilder struct{ pkg *credgwv1.CredentialPackage }

// NewPackage starts the package of a credential set.
func NewPackage(credentialSetID string) *PackageBuilder {
	return &PackageBuilder{pkg: &credgwv1.CredentialPackage{Manifest: &credgwv1.Manifest{CredentialSetId: credentialSetID}}}
}

// Add adds an item and its manifest entry. keys is the number of private
// keys a PKCS#12 item holds (0 otherwise).
func (b *PackageBuilder) Add(name string, kind credgwv1.ItemKind, prof credgwv1.Profile, serial string, data []byte, chain [][]byte, keys int32) {
	sum := sha256.Sum256(data)
	b.pkg.Manifest.Items = append(b.pkg.Manifest.Items, &credgwv1.ManifestItem{Name: name, Kind: kind, Profile: prof, Serial: serial,
		Size: int64(len(data)), Sha256: sum[:], KeyCount: keys})
	b.pkg.Items = append(b.pkg.Items, &credgwv1.PackageItem{Name: name, Data: data, Chain: chain})
}

// Manifest is the manifest so far.
func (b *PackageBuilder) Manifest() *credgwv1.Manifest { return b.pkg.Manifest }

// Marshal encodes the package and its manifest deterministically: the same
// package is the same bytes, so a resumed download continues the same
// SHA-256.
func (b *PackageBuilder) Marshal() (pkg, manifest []byte, err error) {
	opts := proto.MarshalOptions{Deterministic: true}
	if pkg, err = opts.Marshal(b.pkg); err != nil {
		return nil, nil, err
	}
	if manifest, err = opts.Marshal(b.pkg.Manifest); err != nil {
		return nil, nil, err
	}
	return pkg, manifest, nil
}

// Package is a credential package a device downloaded (after its SHA-256
// matched the gateway's), with its items by name.
type Package struct {
	*credgwv1.CredentialPackage
	items map[string]*credgwv1.PackageItem
}

// ParsePackage reads a downloaded package; of two items with one name, the
// last counts.
func ParsePackage(raw []byte) (*Package, error) {
	var pkg credgwv1.CredentialPackage
	if err := proto.Unmarshal(raw, &pkg); err != nil {
		return nil, fmt.Errorf("agent: the package does not parse: %w", err)
	}
	return Wrap(&pkg), nil
}

// Wrap indexes a package's items by name.
func Wrap(pkg *credgwv1.CredentialPackage) *Package {
	p := &Package{CredentialPackage: pkg, items: map[string]*credgwv1.PackageItem{}}
	for _, it := range pkg.GetItems() {
		p.items[it.GetName()] = it
	}
	return p
}

// Named is the item of that name, or nil.
func (p *Package) Named(name string) *credgwv1.PackageItem { return p.items[name] }

// Item is the item a manifest entry names: it must be in the package and,
// except for the chain, match the entry's size and SHA-256.
func (p *Package) Item(m *credgwv1.ManifestItem) (*credgwv1.PackageItem, error) {
	it := p.items[m.GetName()]
	if it == nil {
		return nil, fmt.Errorf("agent: the manifest lists %s, the package lacks it", m.GetName())
	}
	if m.GetKind() == credgwv1.ItemKind_ITEM_KIND_CHAIN {
		return it, nil
	}
	if sum := sha256.Sum256(it.GetData()); !bytes.Equal(sum[:], m.GetSha256()) || int64(len(it.GetData())) != m.GetSize() {
		return nil, fmt.Errorf("agent: %s does not match the manifest", m.GetName())
	}
	return it, nil
}

// CheckManifest checks every item the manifest lists (Item).
func (p *Package) CheckManifest() error {
	for _, m := range p.GetManifest().GetItems() {
		if _, err := p.Item(m); err != nil {
			return err
		}
	}
	return nil
}
