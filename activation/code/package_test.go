package code

import (
	"crypto/sha256"
	"testing"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/protobuf/proto"
)

// testPackage is a small well-formed package; change edits it first.
func testPackage(change func(*credgwv1.CredentialPackage)) []byte {
	data := []byte("a certificate")
	sum := sha256.Sum256(data)
	pkg := &credgwv1.CredentialPackage{
		Manifest: &credgwv1.Manifest{CredentialSetId: "set", Items: []*credgwv1.ManifestItem{
			{Name: "derived-piv-auth.crt", Kind: credgwv1.ItemKind_ITEM_KIND_CERTIFICATE, Serial: "01", Size: int64(len(data)), Sha256: sum[:]},
			{Name: "chain.der", Kind: credgwv1.ItemKind_ITEM_KIND_CHAIN},
		}},
		Items: []*credgwv1.PackageItem{{Name: "derived-piv-auth.crt", Data: data}, {Name: "chain.der", Chain: [][]byte{data}}},
	}
	if change != nil {
		change(pkg)
	}
	raw, _ := proto.Marshal(pkg)
	return raw
}

// checkManifest is what a device checks: the package parsed, every
// manifest item present and matching.
func checkManifest(raw []byte) error {
	pkg, err := ParsePackage(raw)
	if err != nil {
		return err
	}
	return pkg.CheckManifest()
}

// TestCheckManifest: a package whose items match its manifest passes; a
// missing item, another size or another SHA-256 is refused, by
// CheckManifest and by Item.
func TestCheckManifest(t *testing.T) {
	if err := checkManifest(testPackage(nil)); err != nil {
		t.Fatalf("good package: %v", err)
	}
	for name, change := range map[string]func(*credgwv1.CredentialPackage){
		"missing item":  func(p *credgwv1.CredentialPackage) { p.Items = p.Items[1:] },
		"other size":    func(p *credgwv1.CredentialPackage) { p.Manifest.Items[0].Size++ },
		"other sha256":  func(p *credgwv1.CredentialPackage) { p.Items[0].Data = []byte("another certificate") },
		"missing chain": func(p *credgwv1.CredentialPackage) { p.Items = p.Items[:1] },
	} {
		if err := checkManifest(testPackage(change)); err == nil {
			t.Errorf("%s: accepted", name)
		}
		p, _ := ParsePackage(testPackage(change))
		refused := false
		for _, m := range p.GetManifest().GetItems() {
			if _, err := p.Item(m); err != nil {
				refused = true
			}
		}
		if !refused {
			t.Errorf("%s: Item accepted every entry", name)
		}
	}
	if err := checkManifest([]byte{0xff}); err == nil {
		t.Error("garbage accepted")
	}
}

// FuzzCheckManifest: whatever bytes arrive as a package, the manifest
// check returns an error or accepts only items that match the manifest,
// and never panics.
func FuzzCheckManifest(f *testing.F) {
	f.Add(testPackage(nil))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, raw []byte) {
		if err := checkManifest(raw); err != nil {
			return
		}
		pkg, err := ParsePackage(raw)
		if err != nil {
			t.Fatalf("CheckManifest accepted what ParsePackage refuses: %v", err)
		}
		for _, m := range pkg.GetManifest().GetItems() {
			it := pkg.Named(m.GetName())
			if it == nil {
				t.Fatalf("accepted a manifest naming a missing item %q", m.GetName())
			}
			if m.GetKind() != credgwv1.ItemKind_ITEM_KIND_CHAIN {
				if s := sha256.Sum256(it.GetData()); string(s[:]) != string(m.GetSha256()) || int64(len(it.GetData())) != m.GetSize() {
					t.Fatalf("accepted %q that does not match the manifest", m.GetName())
				}
			}
		}
	})
}
