#!/usr/bin/perl
# A stand-in host's power switch for the launcher tests: `fake_power.pl on|off STATE_DIR` creates or removes
# STATE_DIR/powered_on (the fake CPI answers only while it exists, and only boot_ms after it was made) and
# appends "<on|off> <epoch ms> <VMs on the host>" to STATE_DIR/power.log.
use strict;
use warnings;
use Time::HiRes qw(time);
my ($what, $dir) = @ARGV;
die "usage: fake_power.pl on|off STATE_DIR\n" unless $dir && $what =~ /^(on|off)$/;
opendir my $d, "$dir/vms";
my $vms = $d ? scalar(grep { /\.json$/ && !/\.meta\.json$/ } readdir $d) : 0;
if ($what eq 'on') {
    open my $f, '>', "$dir/powered_on" or die "$dir/powered_on: $!";
    close $f;
} else {
    unlink "$dir/powered_on";
}
open my $l, '>>', "$dir/power.log" or die;
printf $l "%s %d %d\n", $what, int(time * 1000), $vms;
close $l;
