package pkcs11

import (
	"bytes"
	"testing"
)

func TestPIVObjectMap(t *testing.T) {
	tests := []struct {
		slot                  PIVSlot
		ref                   byte
		id                    byte
		cert, pub, priv, name string
		alwaysAuth, pin       bool
	}{
		{PIVAuthentication, 0x9A, 0x01, "Certificate for PIV Authentication", "PIV AUTH pubkey", "PIV AUTH key", "9a", false, true},
		{PIVSignature, 0x9C, 0x02, "Certificate for Digital Signature", "SIGN pubkey", "SIGN key", "9c", true, true},
		{PIVKeyManagement, 0x9D, 0x03, "Certificate for Key Management", "KEY MAN pubkey", "KEY MAN key", "9d", false, true},
		{PIVCardAuthentication, 0x9E, 0x04, "Certificate for Card Authentication", "CARD AUTH pubkey", "CARD AUTH key", "9e", false, false},
		{must(PIVRetiredKeyManagement(1)), 0x82, 0x05, "Retired Certificate for Key Management 1", "Retired KEY MAN 1", "Retired KEY MAN 1", "82", false, true},
		{must(PIVRetiredKeyManagement(5)), 0x86, 0x09, "Retired Certificate for Key Management 5", "Retired KEY MAN 5", "Retired KEY MAN 5", "86", false, true},
		{must(PIVRetiredKeyManagement(6)), 0x87, 0x10, "Retired Certificate for Key Management 6", "Retired KEY MAN 6", "Retired KEY MAN 6", "87", false, true},
		{must(PIVRetiredKeyManagement(20)), 0x95, 0x24, "Retired Certificate for Key Management 20", "Retired KEY MAN 20", "Retired KEY MAN 20", "95", false, true},
	}
	for _, tc := range tests {
		s := tc.slot
		if s.KeyRef != tc.ref || !bytes.Equal(s.ID, []byte{tc.id}) || s.CertLabel != tc.cert || s.PublicLabel != tc.pub ||
			s.PrivateLabel != tc.priv || s.Name != tc.name || s.AlwaysAuthenticate != tc.alwaysAuth || s.PINRequired != tc.pin {
			t.Errorf("slot %02X: %+v", tc.ref, s)
		}
		if byRef, ok := PIVSlotByKeyRef(tc.ref); !ok || byRef.Name != tc.name {
			t.Errorf("PIVSlotByKeyRef(%02X) = %+v, %v", tc.ref, byRef, ok)
		}
		if byID, ok := PIVSlotByID([]byte{tc.id}); !ok || byID.KeyRef != tc.ref {
			t.Errorf("PIVSlotByID(%02X) = %+v, %v", tc.id, byID, ok)
		}
		if byName, ok := PIVSlotByName(tc.name); !ok || byName.KeyRef != tc.ref {
			t.Errorf("PIVSlotByName(%s) = %+v, %v", tc.name, byName, ok)
		}
	}
	if n := len(PIVSlots()); n != 24 {
		t.Errorf("PIVSlots() has %d slots, want 24", n)
	}
	seen := map[byte]bool{}
	for _, s := range PIVSlots() {
		if seen[s.ID[0]] {
			t.Errorf("CKA_ID %02X used twice", s.ID[0])
		}
		seen[s.ID[0]] = true
	}
	for _, bad := range []int{0, 21, -1} {
		if _, err := PIVRetiredKeyManagement(bad); err == nil {
			t.Errorf("retired slot %d accepted", bad)
		}
	}
	for _, id := range [][]byte{nil, {0x0A}, {0x25}, {1, 2}} {
		if _, ok := PIVSlotByID(id); ok {
			t.Errorf("PIVSlotByID(%x) found a slot", id)
		}
	}
}

func must(s PIVSlot, err error) PIVSlot {
	if err != nil {
		panic(err)
	}
	return s
}
