// Package code is the contract the gateway and the device share, and
// nothing more: the activation code (the QR payload with its 256-bit secret,
// and the numeric password typed beside it), the secret's lookup hash and
// the password verifier, the keys both sides derive from the two (the
// package's at-rest seal, the delivered PKCS#12 password), and the names
// the key history carries.
//
// It is a leaf: the reference device agent imports it, and so must any
// other agent written in Go, without linking the CA, the store or the
// linter. Keep it that way (the import-rule test in test/ fails otherwise).
package code
