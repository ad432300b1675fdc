# Turns `ferryd --print-config` into the KEYS section of ferryd.conf(5):
# each "# description" block and its "key = default" line become one
# tagged paragraph. The file's own header (up to the first blank line) is
# left out; the page says the same in its own words.
function esc(s) {
	gsub(/\\/, "\\e", s)
	return s
}
function out1(s) {
	# A line starting with . or ' would be read as a request.
	if (s ~ /^[.']/) s = "\\&" s
	print s
}
# Text lines are folded at spaces (mandoc -Tlint asks for at most 80 bytes).
function line(s,    n, i, w, cur) {
	n = split(s, w, " ")
	cur = ""
	for (i = 1; i <= n; i++) {
		if (cur != "" && length(cur) + 1 + length(w[i]) > 76) { out1(cur); cur = w[i] }
		else cur = cur (cur == "" ? "" : " ") w[i]
	}
	if (cur != "") out1(cur)
}
BEGIN { header = 1; desc = "" }
header && /^$/ { header = 0; next }
header { next }
# A backend's section header ("# ---- redis ----") becomes a subsection.
/^# ---- .* ----$/ { name = $0; gsub(/^# ---- | ----$/, "", name); print ".SS " name " keys"; desc = ""; next }
/^#/ { sub(/^# ?/, ""); desc = desc (desc == "" ? "" : " ") $0; next }
/^[a-z_]+ = / {
	key = $1
	val = $0; sub(/^[a-z_]+ = /, "", val); gsub(/^"|"$/, "", val)
	reload = sub(/ \(reloadable\)$/, "", desc)
	print ".TP"
	print ".B " key
	line(esc(desc))
	print ".br"
	if (val == "") line("Default: empty.")
	else {
		# \: lets a long list (redis_deny, duration_buckets) break after a comma.
		v = esc(val); gsub(/,/, ",\\:", v)
		line("Default: \\fB" v "\\fR.")
	}
	line(reload ? "Reloadable with SIGHUP." : "Needs a restart to change.")
	desc = ""
	next
}
