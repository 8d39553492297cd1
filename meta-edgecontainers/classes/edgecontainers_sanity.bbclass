# Checks of the edgecontainers distro configuration, run once when parsing
# starts.  Invalid choices stop the build with one clear message instead of a
# missing-include or missing-provider error later on.

addhandler edgecontainers_sanity_check
edgecontainers_sanity_check[doc] = "Stops parsing with one clear message when an EDGECONTAINERS_* setting has an unsupported value."
edgecontainers_sanity_check[eventmask] = "bb.event.ConfigParsed"

python edgecontainers_sanity_check() {
    d = e.data
    # Only the edgecontainers distro (not the vruntime multiconfig helpers).
    if d.getVar('DISTRO') != 'edgecontainers':
        return

    def one_of(var, valid):
        value = d.getVar(var) or ''
        if value not in valid:
            bb.fatal('%s = "%s" is not supported; valid values: %s' % (var, value, ', '.join(valid)))
        return value

    one_of('EDGECONTAINERS_ENGINE', (d.getVar('EDGECONTAINERS_ENGINES') or '').split())
    one_of('EDGECONTAINERS_SERIAL_CONSOLE', ['0', '1'])
    if d.getVar('EDGECONTAINERS_JOURNAL_STORAGE') == 'persistent':
        # journald keeps a persistent journal in the log directory, which is a
        # tmpfs here (fs-perms-volatile-log.txt): it would be lost at every boot.
        bb.fatal('EDGECONTAINERS_JOURNAL_STORAGE = "persistent" is not supported: %s is in RAM '
                 '(a tmpfs), so the journal could not persist; keep "volatile" and forward the logs '
                 '(e.g. systemd-journal-upload or a log shipper container)' % d.expand('${localstatedir}/log'))
    one_of('EDGECONTAINERS_JOURNAL_STORAGE', ['volatile'])

    attempts = d.getVar('EDGECONTAINERS_BOOT_ATTEMPTS') or ''
    if not (attempts.isdigit() and 1 <= int(attempts) <= 9):
        bb.fatal('EDGECONTAINERS_BOOT_ATTEMPTS = "%s" is not supported; valid values: 1 to 9' % attempts)
    timeout = d.getVar('EDGECONTAINERS_HEALTH_TIMEOUT') or ''
    if not (timeout.isdigit() and int(timeout) >= 30):
        bb.fatal('EDGECONTAINERS_HEALTH_TIMEOUT = "%s" is not supported; give whole seconds, at least 30' % timeout)

    machine = d.getVar('MACHINE')
    supported = (d.getVar('EDGECONTAINERS_MACHINES') or '').split()
    if machine not in supported:
        bb.warn('MACHINE "%s" is not one meta-edgecontainers is tested on (%s); the A/B layout and '
                'RAUC system.conf need a port (see meta-edgecontainers/README.md)' % (machine, ', '.join(supported)))

    if 'debug-tweaks' in (d.getVar('EXTRA_IMAGE_FEATURES') or '').split():
        bb.fatal('EXTRA_IMAGE_FEATURES contains debug-tweaks; use the edgecontainers-image-dev image instead')
}

EDGECONTAINERS_MACHINES ?= "raspberrypi4-64 raspberrypi5 qemux86-64 qemuarm64"
