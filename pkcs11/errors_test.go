package pkcs11

import (
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// TestUnavailableClassification: the PKCS#11 return values that mean the
// token, its sessions or its device are gone are ErrTokenUnavailable, keep
// their return value, and say what to check; the others are not.
func TestUnavailableClassification(t *testing.T) {
	tests := []struct {
		name   string
		rv     uint
		reason string // "" = not unavailable
	}{
		{"token not present", p11.CKR_TOKEN_NOT_PRESENT, "token not present"},
		{"token not recognised", p11.CKR_TOKEN_NOT_RECOGNIZED, "token not recognised"},
		{"device removed", p11.CKR_DEVICE_REMOVED, "device removed"},
		{"device error", p11.CKR_DEVICE_ERROR, "device error"},
		{"device memory", p11.CKR_DEVICE_MEMORY, "device out of memory"},
		{"session handle invalid", p11.CKR_SESSION_HANDLE_INVALID, "session lost"},
		{"session closed", p11.CKR_SESSION_CLOSED, "session closed"},
		{"slot id invalid", p11.CKR_SLOT_ID_INVALID, "slot gone"},
		{"not initialised", p11.CKR_CRYPTOKI_NOT_INITIALIZED, "module not initialised"},
		// Ambiguous: SoftHSM says it for a bad GCM tag too. Token.do
		// probes the session before calling it unavailable.
		{"general error", p11.CKR_GENERAL_ERROR, ""},
		{"PIN incorrect", p11.CKR_PIN_INCORRECT, ""},
		{"PIN locked", p11.CKR_PIN_LOCKED, ""},
		{"bad mechanism", p11.CKR_MECHANISM_INVALID, ""},
		{"key handle invalid", p11.CKR_KEY_HANDLE_INVALID, ""},
		{"data invalid", p11.CKR_DATA_INVALID, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := opError(`sign with id=01 on token "ca"`, p11.Error(tc.rv))
			if got := errors.Is(err, ErrTokenUnavailable); got != (tc.reason != "") {
				t.Fatalf("errors.Is(%v, ErrTokenUnavailable) = %v, want %v", err, got, tc.reason != "")
			}
			if tc.reason == "" {
				return
			}
			if !errors.Is(err, p11.Error(tc.rv)) {
				t.Errorf("%v lost its return value %#x", err, tc.rv)
			}
			var u *UnavailableError
			if !errors.As(err, &u) || u.Reason != tc.reason {
				t.Fatalf("%v: want an *UnavailableError with reason %q", err, tc.reason)
			}
			for _, want := range []string{tc.reason, `token "ca"`, "check the HSM"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not say %q", err, want)
				}
			}
			// Wrapped again by a caller, it is still found, and not twice.
			again := wrapOp("sign", err)
			if !errors.As(again, &u) || strings.Count(again.Error(), ErrTokenUnavailable.Error()) != 1 {
				t.Errorf("wrapped again: %v", again)
			}
		})
	}
}
