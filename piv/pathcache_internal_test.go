package piv

import (
	"crypto/x509"
	"encoding/asn1"
	"testing"
	"time"
)

// TestPathCache: a cached chain is used only while every certificate in it
// is valid, keys differ by leaf, intermediates and policies, and the cache
// stays bounded.
func TestPathCache(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	cert := func(raw string, from, to time.Time) *x509.Certificate {
		return &x509.Certificate{Raw: []byte(raw), NotBefore: from, NotAfter: to}
	}
	leaf := cert("leaf", now.AddDate(0, -1, 0), now.AddDate(1, 0, 0))
	inter := cert("inter", now.AddDate(-1, 0, 0), now.AddDate(0, 0, 10)) // expires first
	root := cert("root", now.AddDate(-5, 0, 0), now.AddDate(5, 0, 0))
	pol := []asn1.ObjectIdentifier{PolicyCommonAuthentication}
	var c pathCache
	k := pathKey(leaf, nil, pol)
	if c.get(k, now) != nil {
		t.Fatal("hit on an empty cache")
	}
	c.put(k, []*x509.Certificate{leaf, inter, root})
	if got := c.get(k, now); len(got) != 3 {
		t.Fatalf("get = %v, want the chain", got)
	}
	for name, at := range map[string]time.Time{
		"intermediate expired": now.AddDate(0, 0, 11),
		"before the leaf":      now.AddDate(0, -2, 0),
	} {
		if c.get(k, at) != nil {
			t.Errorf("%s: the cached chain was used", name)
		}
	}
	others := map[string][32]byte{
		"other leaf":          pathKey(root, nil, pol),
		"other intermediates": pathKey(leaf, []*x509.Certificate{inter}, pol),
		"other policies":      pathKey(leaf, nil, []asn1.ObjectIdentifier{{2, 16, 840, 1, 101, 3, 2, 1, 3, 7}}),
	}
	for name, ok := range others {
		if ok == k {
			t.Errorf("%s: same key", name)
		}
		if c.get(ok, now) != nil {
			t.Errorf("%s: hit", name)
		}
	}
	for i := 0; i < maxCachedPaths+10; i++ {
		c.put(pathKey(cert(string(rune(i)), now, now), nil, pol), nil)
	}
	if n := len(c.m); n > maxCachedPaths {
		t.Fatalf("%d cached paths, bound %d", n, maxCachedPaths)
	}
}
