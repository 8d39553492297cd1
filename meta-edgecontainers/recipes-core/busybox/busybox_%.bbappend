# edgecontainers: httpd with CGI for the demo app's container image.  Only in
# the edgecontainers distro.
FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/files:"

SRC_URI:append:edgecontainers = " file://edgecontainers-httpd.cfg"
