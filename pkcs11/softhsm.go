package pkcs11

import (
	"fmt"
	"os"
	"path/filepath"
)

// SoftHSMModuleEnv overrides where SoftHSMModule looks for the library.
const SoftHSMModuleEnv = "CREDGW_SOFTHSM_MODULE"

// softHSMPaths are where Debian, Ubuntu, Fedora and Homebrew put the library.
var softHSMPaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// SoftHSMModule returns the path of the SoftHSM 2 library.
func SoftHSMModule() (string, error) {
	if p := os.Getenv(SoftHSMModuleEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("pkcs11: %s=%s: %w", SoftHSMModuleEnv, p, err)
		}
		return p, nil
	}
	for _, p := range softHSMPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: SoftHSM 2 is not installed (run `make deps`, or apt-get install softhsm2; or set %s)", ErrModule, SoftHSMModuleEnv)
}

// WriteSoftHSMConfig makes dir/tokens and a dir/softhsm2.conf that keeps
// tokens there (never in the system's /var/lib/softhsm) and returns the
// config path. Point SOFTHSM2_CONF at it before the module is first opened.
func WriteSoftHSMConfig(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	tokens := filepath.Join(abs, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", fmt.Errorf("pkcs11: softhsm token directory: %w", err)
	}
	conf := filepath.Join(abs, "softhsm2.conf")
	body := fmt.Sprintf("# written by credgw: tokens of this environment only\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return "", fmt.Errorf("pkcs11: write %s: %w", conf, err)
	}
	return conf, nil
}
