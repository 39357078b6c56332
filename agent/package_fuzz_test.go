package agent

import (
	"context"
	"crypto/sha256"
	"testing"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzReadManifest: whatever bytes arrive as a package, the manifest check
// returns an error or a result that matches the manifest, and never panics.
func FuzzReadManifest(f *testing.F) {
	data := []byte("a certificate")
	sum := sha256.Sum256(data)
	good, _ := proto.Marshal(&credgwv1.CredentialPackage{
		Manifest: &credgwv1.Manifest{CredentialSetId: "set", Items: []*credgwv1.ManifestItem{
			{Name: "derived-piv-auth.crt", Kind: credgwv1.ItemKind_ITEM_KIND_CERTIFICATE, Serial: "01", Size: int64(len(data)), Sha256: sum[:]},
			{Name: "chain.der", Kind: credgwv1.ItemKind_ITEM_KIND_CHAIN},
		}},
		Items: []*credgwv1.PackageItem{{Name: "derived-piv-auth.crt", Data: data}, {Name: "chain.der", Chain: [][]byte{data}}},
	})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, raw []byte) {
		res := &Result{}
		if err := readManifest(context.Background(), raw, nil, nil, Options{}, res); err != nil {
			return
		}
		pkg, items, err := parsePackage(raw)
		if err != nil {
			t.Fatalf("readManifest accepted what parsePackage refuses: %v", err)
		}
		for _, m := range pkg.GetManifest().GetItems() {
			it := items[m.GetName()]
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
