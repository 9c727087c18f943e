# The per-channel concurrency limit over time (top) and the connections
# open per channel (bottom), from the worker's /metrics sampled during one
# scripts/bench flow-control run. Drawn by scripts/bench:
#   gnuplot -e "datadir='DIR'; out='limit.png'; plottitle='...'; capacity=64;
#               stepat=3; limitname='...'; connname='...'" bench/limit.gp
# DIR/limit/CHANNEL.dat and DIR/conns/CHANNEL.dat hold "seconds value" rows.
# capacity > 0 draws the simulator's capacity; stepat > 0 marks the
# latency step.
set terminal pngcairo size 1400,900 font "DejaVu Sans,11" noenhanced
set output out
set multiplot layout 2,1 title plottitle

limits = system("ls ".datadir."/limit/*.dat 2>/dev/null | sort")
conns = system("ls ".datadir."/conns/*.dat 2>/dev/null | sort")
chan(f) = system("basename ".f." .dat")

set key outside right top box opaque
set lmargin at screen 0.06
set rmargin at screen 0.84
set grid
set xlabel "seconds since the load started"
set xrange [0:*]
set yrange [0:*]
if (stepat > 0) {
    set arrow 1 from stepat, graph 0 to stepat, graph 1 nohead dt 2 lw 1.5 lc "dark-red"
    set label 1 "latency step" at stepat, graph 0.95 offset 0.5,0 tc "dark-red"
}

set title "concurrency limit per channel (".limitname.")"
set ylabel "calls"
if (capacity > 0) {
    plot for [i=1:words(limits)] word(limits, i) using 1:2 with steps lw 2 lc i \
             title chan(word(limits, i)), \
         capacity with lines dt 3 lw 1.5 lc "gray30" title sprintf("capacity %d", capacity)
} else {
    plot for [i=1:words(limits)] word(limits, i) using 1:2 with steps lw 2 lc i \
             title chan(word(limits, i))
}

set title "connections open per channel (".connname.")"
set ylabel "connections"
if (words(conns) > 0) {
    plot for [i=1:words(conns)] word(conns, i) using 1:2 with steps lw 2 lc i \
             title chan(word(conns, i))
} else {
    unset key
    unset arrow 1
    unset label 1
    set label 2 "no ".connname." samples" at graph 0.5, graph 0.5 center
    set xrange [0:1]
    set yrange [0:1]
    plot 2 notitle
}
unset multiplot
