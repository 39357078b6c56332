// Package pkcs11 is credgw's one PKCS#11 layer: it loads each module once per
// process, finds tokens by label or serial, keeps a bounded, self-healing
// session pool per token, and exposes token keys as crypto.Signer,
// crypto.Decrypter and AES-GCM sealers.
//
// Everything else in credgw (the CA key, the escrow key-encryption key, PIV
// cards, hsm-sim) reaches PKCS#11 through this package: a module's
// C_Initialize/C_Finalize and its login state are process-wide, so two layers
// in one process would fight over them. PINs are held in unexported fields and
// never appear in errors, logs or String output.
package pkcs11
