package notify_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/store"
)

// setsStore gives an identity the sets in sets.
type setsStore struct {
	fakeStore
	sets []store.CredentialSet
}

func (s *setsStore) CredentialSetsOfIdentity(context.Context, store.IdentitySelector) ([]store.CredentialSet, error) {
	return s.sets, nil
}

func (s *setsStore) CredentialSet(_ context.Context, id string) (store.CredentialSet, error) {
	for _, cs := range s.sets {
		if cs.ID == id {
			return cs, nil
		}
	}
	return store.CredentialSet{}, store.ErrNotFound
}

// TestIdentityNoticeReachesEveryAddress: a termination or revocation of an
// identity was told at its newest set's address only, "" when that set
// was enrolled without an email (authentication only), and an empty
// address was "sent" by the SMTP sender doing nothing: the addresses of
// record on the older sets never heard. Every distinct address of the
// identity's sets is told; an address that is not one mailbox
// (addr-spec: a ">" would end the RCPT TO and pass ESMTP parameters) is
// not written to the outbox.
func TestIdentityNoticeReachesEveryAddress(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.key"), []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &setsStore{sets: []store.CredentialSet{
		{ID: "newest", Email: ""},
		{ID: "older", Email: "Holder@Example.gov"},
		{ID: "oldest", Email: "holder@example.gov"},
		{ID: "work", Email: "h.older@agency.gov"},
		{ID: "odd", Email: "holder@example.gov> NOTIFY=NEVER"},
	}}
	cfg := notify.Config{Webhook: notify.WebhookConfig{URL: "http://127.0.0.1:9/hook", SecretFile: "hook.key"}}
	o, err := notify.New(cfg, func(p string) string { return filepath.Join(dir, p) }, st, discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Identity(ctx, "termination", store.IdentitySelector{CardUUID: "u"}, "terminated", "Your PIV account was terminated.")
	var to []string
	for _, n := range st.enqueued {
		to = append(to, n.Recipient)
	}
	slices.Sort(to)
	if want := []string{"Holder@Example.gov", "h.older@agency.gov"}; !slices.Equal(to, want) {
		t.Errorf("told %q, want %q (each address once, whatever its case; none empty or malformed)", to, want)
	}
	// A set's own notice to a malformed address is not written either.
	st.enqueued = nil
	o.Set(ctx, "revocation", "odd", "revoked", "Revoked.")
	if len(st.enqueued) != 0 {
		t.Errorf("a notice to %q was queued", st.enqueued[0].Recipient)
	}
}
