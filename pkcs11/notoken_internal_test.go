package pkcs11

import (
	"strings"
	"testing"
)

// TestNoTokenSaysHowToMakeOne: credgw makes keys in a token, never the
// token; a newcomer whose token did not exist (or whose SOFTHSM2_CONF
// was not exported) was told only "the module has no initialised token".
func TestNoTokenSaysHowToMakeOne(t *testing.T) {
	t.Setenv("SOFTHSM2_CONF", "/srv/credgw/softhsm2.conf")
	soft := errNoToken(&Module{path: "/usr/lib/softhsm/libsofthsm2.so"}, `token "credgw-ca"`, nil).Error()
	for _, want := range []string{"softhsm2-util --init-token", "credgw-ca", "SOFTHSM2_CONF=/srv/credgw/softhsm2.conf", "hsm-sim"} {
		if !strings.Contains(soft, want) {
			t.Errorf("SoftHSM: %q does not say %q", soft, want)
		}
	}
	t.Setenv("SOFTHSM2_CONF", "")
	if soft := errNoToken(&Module{path: "/usr/lib/softhsm/libsofthsm2.so"}, `token "credgw-ca"`, nil).Error(); !strings.Contains(soft, "/etc/softhsm/softhsm2.conf") {
		t.Errorf("SoftHSM without SOFTHSM2_CONF: %q does not name the default config", soft)
	}
	other := errNoToken(&Module{path: "/opt/hsm/libcs_pkcs11_R3.so"}, `token "credgw-ca"`, []TokenInfo{{Label: "admin", Serial: "1", Initialized: true}}).Error()
	if !strings.Contains(other, `"admin"`) || !strings.Contains(other, "HSM vendor's tool") || strings.Contains(other, "softhsm2-util") {
		t.Errorf("another module: %q", other)
	}
	// A smart card's middleware: the card is not in the reader, or is
	// named otherwise (initialising a card is not the person's to do).
	for _, mod := range []string{"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so", "/usr/local/lib/libykcs11.so"} {
		card := errNoToken(&Module{path: mod}, `token "Jane Doe"`, nil).Error()
		for _, want := range []string{"reader", "pkcs11-tool --module " + mod + " -L"} {
			if !strings.Contains(card, want) {
				t.Errorf("%s: %q does not say %q", mod, card, want)
			}
		}
		if strings.Contains(card, "HSM vendor's tool") {
			t.Errorf("%s: %q tells a card holder to initialise the token", mod, card)
		}
	}
}
