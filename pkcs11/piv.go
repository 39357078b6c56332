package pkcs11

import "fmt"

// PIVSlot is one PIV key reference with the PKCS#11 objects OpenSC's PIV
// driver exposes for it (SP 800-73-4 / SP 800-78-4 key references; CKA_IDs
// and labels from OpenSC src/libopensc/pkcs15-piv.c). hsm-sim writes the same
// ids and labels, so credgw reads a simulated card and a real one alike.
type PIVSlot struct {
	// Name is credgw's short name: "9a", "9c", "9d", "9e", "82" … "95".
	Name string
	// KeyRef is the card's key reference (0x9A …).
	KeyRef byte
	// ID is the CKA_ID of the certificate, public key and private key.
	ID []byte
	// CertLabel, PublicLabel and PrivateLabel are OpenSC's CKA_LABELs.
	CertLabel, PublicLabel, PrivateLabel string
	// AlwaysAuthenticate: the PIN must be presented before every use
	// (9C: OpenSC sets CKA_ALWAYS_AUTHENTICATE, user_consent).
	AlwaysAuthenticate bool
	// PINRequired is false only for Card Authentication (9E).
	PINRequired bool
}

// The four PIV keys every credgw card carries.
var (
	PIVAuthentication = PIVSlot{Name: "9a", KeyRef: 0x9A, ID: []byte{0x01},
		CertLabel: "Certificate for PIV Authentication", PublicLabel: "PIV AUTH pubkey", PrivateLabel: "PIV AUTH key",
		PINRequired: true}
	PIVSignature = PIVSlot{Name: "9c", KeyRef: 0x9C, ID: []byte{0x02},
		CertLabel: "Certificate for Digital Signature", PublicLabel: "SIGN pubkey", PrivateLabel: "SIGN key",
		AlwaysAuthenticate: true, PINRequired: true}
	PIVKeyManagement = PIVSlot{Name: "9d", KeyRef: 0x9D, ID: []byte{0x03},
		CertLabel: "Certificate for Key Management", PublicLabel: "KEY MAN pubkey", PrivateLabel: "KEY MAN key",
		PINRequired: true}
	PIVCardAuthentication = PIVSlot{Name: "9e", KeyRef: 0x9E, ID: []byte{0x04},
		CertLabel: "Certificate for Card Authentication", PublicLabel: "CARD AUTH pubkey", PrivateLabel: "CARD AUTH key"}
)

// PIVRetiredKeyManagement returns retired key management slot n (1…20): key
// reference 0x82+n-1. OpenSC writes its CKA_ID as the two decimal digits of
// n+4 read as hex ("05" … "09", "10" … "24"), so retired 6 has CKA_ID 0x10.
func PIVRetiredKeyManagement(n int) (PIVSlot, error) {
	if n < 1 || n > 20 {
		return PIVSlot{}, fmt.Errorf("pkcs11: retired key management slot %d: PIV has 1 to 20", n)
	}
	d := n + 4
	id := byte(d/10)<<4 | byte(d%10)
	ref := byte(0x82 + n - 1)
	return PIVSlot{
		Name:         fmt.Sprintf("%02x", ref),
		KeyRef:       ref,
		ID:           []byte{id},
		CertLabel:    fmt.Sprintf("Retired Certificate for Key Management %d", n),
		PublicLabel:  fmt.Sprintf("Retired KEY MAN %d", n),
		PrivateLabel: fmt.Sprintf("Retired KEY MAN %d", n),
		PINRequired:  true,
	}, nil
}

// PIVSlots returns all 24 slots: 9A, 9C, 9D, 9E, then retired 1 … 20.
func PIVSlots() []PIVSlot {
	out := []PIVSlot{PIVAuthentication, PIVSignature, PIVKeyManagement, PIVCardAuthentication}
	for n := 1; n <= 20; n++ {
		s, _ := PIVRetiredKeyManagement(n)
		out = append(out, s)
	}
	return out
}

// PIVSlotByKeyRef finds a slot by key reference (0x9A, 0x82 …).
func PIVSlotByKeyRef(ref byte) (PIVSlot, bool) {
	for _, s := range PIVSlots() {
		if s.KeyRef == ref {
			return s, true
		}
	}
	return PIVSlot{}, false
}

// PIVSlotByID finds a slot by CKA_ID.
func PIVSlotByID(id []byte) (PIVSlot, bool) {
	if len(id) != 1 {
		return PIVSlot{}, false
	}
	for _, s := range PIVSlots() {
		if s.ID[0] == id[0] {
			return s, true
		}
	}
	return PIVSlot{}, false
}

// PIVSlotByName finds a slot by credgw's name ("9a", "82", …).
func PIVSlotByName(name string) (PIVSlot, bool) {
	for _, s := range PIVSlots() {
		if s.Name == name {
			return s, true
		}
	}
	return PIVSlot{}, false
}

// PrivateKey names the slot's private key by its CKA_ID alone: SP 800-73-4
// fixes the key reference, which middlewares map to the same CKA_ID, but
// each labels it its own way (OpenSC "PIV AUTH key", Yubico's ykcs11
// "Private key for PIV Authentication", some none). What the key signs
// is checked with the slot's certificate by whoever relies on it.
func (s PIVSlot) PrivateKey() KeyRef { return KeyRef{ID: s.ID} }
