"""Hand-written building blocks for the sound-caption corpus (see ``sound_captions.py`` here).

``SOURCES`` is parsed from one compact text table. Each source is a block of lines:

    key | family | environments | kind
        noun variants, comma separated
        verb phrases, comma separated
        + extra adverbs (optional line)

A noun variant is singular and countable unless it ends in ``:p`` (plural, "dogs"),
``:m`` (mass, "rain": no article, singular verb) or ``:n`` (a fixed singular phrase used
as written, "someone"). A verb phrase is a base-form verb, conjugated by the generator,
followed by any complement ("knock on a door"); one starting with ``@`` is a verbless
phrase that follows the noun directly ("footsteps on gravel"). Kinds pick the adverb
list: ``e`` discrete events, ``c`` continuous sounds, ``v`` voices, ``m`` music.
"""

from __future__ import annotations

from dataclasses import dataclass


def _items(text: str, sep: str = ";") -> tuple[str, ...]:
    """The non-empty, stripped pieces of ``text`` split on ``sep`` (or on whitespace)."""
    pieces = text.split(sep) if sep else text.split()
    return tuple(piece.strip() for piece in pieces if piece.strip())


def _words(text: str) -> frozenset[str]:
    return frozenset(_items(text, ""))


def _groups(text: str) -> dict[str, tuple[str, ...]]:
    """``name: a; b; c`` lines (continued on indented lines) into {name: (a, b, c)}."""
    groups: dict[str, str] = {}
    name = ""
    for line in text.strip().splitlines():
        if not line[0].isspace():
            name, _, line = line.partition(":")
            groups[name] = ""
        groups[name] += ";" + line
    return {name: _items(items) for name, items in groups.items()}


FAMILIES = _items("animals people vehicles machines domestic nature water music alarms urban", "")

# Environments a source is heard in; they choose the settings a caption may add.
INDOOR = _items("home office venue work transit", "")
OUTDOOR = _items("street nature farm water garden sky", "")
ENV_SETTINGS = _groups("""
home: in a small room; in a kitchen; in a living room; in a quiet room; indoors; inside a house;
    in an apartment; upstairs; in a hallway; in a bedroom
office: in an office; in a quiet office; in a busy office; in a library; in a classroom;
    in a meeting room
venue: in a concert hall; in a church; in a large hall; in a stadium; in a crowded bar;
    in a restaurant; in an auditorium; at a party; in a gym; in a theater; at a festival;
    in a shopping mall
work: in a workshop; in a garage; at a construction site; in a factory; in a warehouse; in a shed
transit: at a train station; at an airport; on a subway platform; at a bus stop; in a tunnel;
    at a busy terminal
street: on a busy street; on a quiet street; in the city; at an intersection; in a parking lot;
    on a city sidewalk; outside a cafe; in a town square; under a bridge; in a small town
nature: in a forest; in the woods; in a field; in a park; in the countryside; in a meadow;
    in the mountains; near a campsite; in a quiet valley
farm: on a farm; in a barn; in a pasture; in a farmyard; near a stable
water: at the beach; by a lake; by a river; near the shore; in a harbor; by the sea; near a marina;
    on a dock
garden: in a garden; in a backyard; in the yard; in a suburban neighborhood
sky: over the city; over the hills; across the valley; above the rooftops
""")
_OTHER_SETTINGS = _groups("""
distance: in the distance; nearby; far away; close to the microphone; up close;
    from across the street; close by
near: close to the microphone; up close; close by
time: at night; late at night; in the morning; early in the morning; in the evening;
    in the afternoon; during the day; at dawn; at dusk
indoor: echoing in a large hall; echoing in an empty room; with a slight echo; through a wall;
    through a closed door; from another room; in the next room
outdoor: over wind noise; in the rain; in windy weather; outdoors; outside; in the open air;
    over light wind
""")
DISTANCE_SETTINGS = _OTHER_SETTINGS["distance"]
NEAR_SETTINGS = frozenset(_OTHER_SETTINGS["near"])
TIME_SETTINGS = _OTHER_SETTINGS["time"]
INDOOR_ACOUSTICS = _OTHER_SETTINGS["indoor"]
OUTDOOR_ACOUSTICS = _OTHER_SETTINGS["outdoor"]

ADVERBS = _groups("""
e: loudly; twice; three times; repeatedly; several times; in short bursts; once; again and again;
    sharply; suddenly; briefly; intermittently; over and over; a few times
c: steadily; continuously; constantly; loudly; softly; quietly; gently; for a long time;
    without stopping; faintly; intermittently; in the background
v: softly; loudly; quietly; excitedly; calmly; angrily; happily; nervously; in a low voice;
    briefly; for a while; cheerfully
m: softly; loudly; slowly; quickly; gently; cheerfully; rhythmically; in a steady rhythm;
    at a fast tempo; quietly; beautifully; for a while
""")
# Adverbs that count repetitions: they read badly with the progressive ("is barking twice").
COUNT_ADVERBS = frozenset(
    _items("twice; three times; once; several times; a few times; again and again")
)
# One-off actions ("a car passes by", "a door creaks open") take only these.
MANNER_ADVERBS = _items("loudly suddenly quickly slowly briefly quietly", "")
ONE_OFF_VERBS = _words("""
    open close arrive shatter break smash start take pull pass drive speed race zoom tip dive jump
    burst strike explode slide swing hurry
""")
ONE_OFF_ENDINGS = _words("by past away up open shut off out in over")
ONE_OFF_PARTICLES = _words("by past away up open shut off out")
# Complements starting with one of these take a single-word adverb before them ("drips slowly
# into a bucket"); any of them (or a place word) means the phrase already says where it is.
PREPOSITIONS = _words("on in into onto from at against through across along over under down around")
PLACE_WORDS = PREPOSITIONS | {"overhead", "underfoot", "downhill"}
# Verbs whose "-ing" form does not read as an adjective ("a talking man").
NOT_ATTRIBUTIVE = _words("""
    speak talk play start sound open close fire blow land rise fill drain perform pulse strike
    beat say mimic arrive run lift fall tear break sing strain
""")
# Words a caption may repeat; any other word of three letters or more appears at most once.
REPEATABLE = _words("""
    the and with are for from into onto over while then can heard sound sounds noise its their
    again back times short
""")
# Captions never mix these: "a loud dog barking softly", "a distant siren close by".
LOUD = _words("loud loudly")
QUIET = _words("faint faintly soft softly quiet quietly muffled gently")
FAR, NEAR = _words("distant distance far"), _words("nearby close")
# Loudness adjectives put in front of a source's first noun ("distant thunder").
ADJECTIVES = _items("distant loud faint muffled", "")
ANIMAL_ADJECTIVES = _items("distant loud", "")
NO_ADJECTIVE_FAMILIES = frozenset({"people"})
NO_ADJECTIVE_SOURCES = _words("commuters construction chatter protest busker")
SOUND_WORDS = _items("the sound of; the sound of; the sound of; the sounds of; the noise of")

_TABLE = """
dog | animals | home street nature farm garden | e
    dog, small dog, large dog, puppy, dogs:p, two dogs:p
    bark, growl, whimper, howl, yelp, pant, bark at a passing car
cat | animals | home garden | e
    cat, kitten, cats:p, old cat
    meow, purr, hiss, yowl, mew
songbird | animals | nature garden street | c
    bird, small bird, songbird, birds:p, sparrows:p
    chirp, sing, tweet, twitter, call out, @in the trees
rooster | animals | farm | e
    rooster
    crow, crow at sunrise
chicken | animals | farm | e
    chicken, hen, chickens:p, hens:p
    cluck, cackle, squawk, peck at grain
cow | animals | farm | e
    cow, cows:p, calf
    moo, bellow, low
sheep | animals | farm nature | e
    sheep, lamb, flock of sheep
    bleat, baa
goat | animals | farm | e
    goat, goats:p, young goat
    bleat, cry out
pig | animals | farm | e
    pig, pigs:p, piglet
    oink, grunt, squeal, snort
horse | animals | farm nature street | e
    horse, horses:p, pony
    neigh, whinny, snort, gallop past, trot along a road
hooves | animals | street farm | e
    hooves:p, horse hooves:p
    clop on cobblestones, clatter on pavement, @on a dirt road, @on cobblestones
donkey | animals | farm | e
    donkey, mule
    bray, snort
duck | animals | water farm nature | e
    duck, ducks:p, mallard
    quack, splash in a pond, paddle across a pond
goose | animals | farm water | e
    goose, geese:p
    honk, hiss, cackle, fly over honking
crow | animals | nature street | e
    crow, crows:p, raven
    caw, croak
owl | animals | nature | e
    owl, barn owl, owls:p
    hoot, screech, call softly
pigeon | animals | street | e
    pigeon, pigeons:p, dove
    coo, flutter away, take flight
seagull | animals | water | e
    seagull, gulls:p, seagulls:p
    cry, squawk, call out, screech overhead
frog | animals | water nature | c
    frog, frogs:p, toad, bullfrog
    croak, chirp, @in a pond
cricket | animals | nature garden | c
    crickets:p, cricket
    chirp, trill, @in the grass
insects | animals | nature | c
    insects:p, cicadas:p, cicada
    buzz, drone, hum, chirp, whir
bee | animals | nature garden | c
    bee, bees:p, bumblebee, swarm of bees
    buzz, hum, buzz around a flower
fly | animals | home | c
    fly, mosquito, housefly
    buzz, whine, buzz around a room, bump against a window
wolf | animals | nature | e
    wolf, wolves:p, coyote, coyotes:p
    howl, growl, yip, howl at the moon
lion | animals | nature | e
    lion, tiger, big cat
    roar, growl, snarl
elephant | animals | nature | e
    elephant, elephants:p
    trumpet, rumble, stomp
monkey | animals | nature | e
    monkey, monkeys:p, chimpanzee
    chatter, screech, hoot
woodpecker | animals | nature garden | e
    woodpecker
    peck at a tree, drum on a tree trunk, tap on a branch
parrot | animals | home | e
    parrot, parakeet, budgie
    squawk, whistle, chatter, mimic a voice
mouse | animals | home | e
    mouse, mice:p, rat
    squeak, scurry across the floor, scratch inside a wall
person_speaking | people | home office street venue transit | v
    man, old man, young man, woman, young woman, elderly woman
    speak, talk, say something, speak into a microphone, tell a story, read aloud
child | people | home street garden venue | v
    child, little girl, little boy, children:p, kids:p
    talk, shout, giggle, sing, ask a question
baby | people | home | v
    baby, infant, toddler
    cry, babble, coo, giggle, laugh, whimper, fuss
laughter | people | home venue office street | v
    man, woman, girl, group of people, people:p, someone:n
    laugh, giggle, chuckle, burst into laughter, laugh out loud
cough | people | home office venue transit | e
    man, woman, old man, person, someone:n
    cough, cough hoarsely, let out a dry cough
sneeze | people | home office | e
    man, woman, person, someone:n
    sneeze, sniffle
snore | people | home | c
    sleeping man, person, old man, someone:n
    snore, snore through the night, wheeze
breathing | people | home nature | c
    person, man, woman, someone:n, runner
    breathe heavily, breathe deeply, gasp for air, pant
whisper | people | home office venue | v
    man, woman, someone:n, two people:p, girl
    whisper, whisper a secret, murmur
shout | people | street home venue nature | v
    man, woman, someone:n, people:p
    shout, yell, call out a name, shout for help
scream | people | home street nature | e
    woman, girl, child, someone:n
    scream, shriek, let out a scream
singing | people | home street venue | v
    man, woman, girl, someone:n, old man
    sing, hum a tune, sing a song, sing along to the radio
whistling | people | home street | v
    man, someone:n, boy
    whistle, whistle a tune, whistle for a dog
footsteps | people | home street office nature transit | e
    footsteps:p, heavy footsteps:p, light footsteps:p, hurried footsteps:p
    approach, echo, pass by, fade away, crunch on gravel, splash through puddles
    @on gravel, @on a wooden floor, @on snow, @in a hallway, @on a tiled floor, @on stairs
running | people | street nature transit | e
    person, someone:n, jogger, runner, children:p
    run past, run by, run up the stairs, jog along a path
typing | people | office home | e
    someone:n, person, man, woman, office worker
    type on a keyboard, type on a laptop, type an email, tap on a touchscreen
    + quickly, rapidly, slowly, steadily
eating | people | home venue | e
    someone:n, man, person, child
    chew loudly, crunch on an apple, slurp soup, munch on chips, chew gum
drinking | people | home venue | e
    someone:n, person, man
    gulp water, sip hot tea, slurp a drink, swallow water
conversation | people | home venue street office | v
    two people:p, people:p, group of friends, couple, men:p, women:p
    talk, chat, argue, have a conversation, talk over dinner
play | people | garden street nature | v
    children:p, kids:p, group of children
    play, shriek, run around, play in a playground, play a game
sigh | people | home office | e
    person, man, woman, someone:n
    sigh, yawn, groan
hiccup | people | home | e
    person, child, man
    hiccup, burp
crying | people | home street | v
    woman, man, girl, boy
    cry, sob, weep, sniffle
snap | people | home office venue | e
    someone:n, people:p
    snap their fingers, clap their hands, drum their fingers on a table
heartbeat | people | home | c
    heartbeat, heart
    beat, pound, thump, @through a stethoscope
grunt | people | work home venue | e
    man, weightlifter, worker
    grunt, groan, strain
gargle | people | home | e
    someone:n, person
    gargle, brush their teeth, rinse their mouth
speech | people | venue office | v
    lecturer, teacher, speaker, presenter
    give a lecture, address an audience, give a speech, speak into a microphone
announcer | people | transit venue | v
    announcer, voice, female voice, male voice
    make an announcement, speak over a loudspeaker, speak over an intercom, call a flight
car | vehicles | street | c
    car, old car, sports car, cars:p, small car
    pass by, drive by, speed past, accelerate, start up, pull away, splash through a puddle
engine | vehicles | street work | c
    car engine, engine, diesel engine, old engine, truck engine
    idle, rev, start, run, sputter, roar, rumble, idle at a red light, turn over
car_horn | vehicles | street | e
    car horn, horn, horns:p, car horns:p
    honk, beep, blare, sound, honk in traffic
truck | vehicles | street work | c
    truck, large truck, delivery truck, garbage truck, trucks:p
    pass by, rumble past, reverse, idle, brake with a hiss
bus | vehicles | street transit | c
    bus, city bus, school bus
    pull into a stop, pass by, idle, pull away, hiss to a stop
motorcycle | vehicles | street | c
    motorcycle, motorbike, scooter, motorcycles:p
    rev, roar past, speed by, accelerate, idle
train | vehicles | transit nature | c
    train, freight train, passenger train, trains:p
    pass by, rumble past, approach, pull into the station, clatter along the tracks
train_horn | vehicles | transit nature | e
    train horn, train whistle, steam whistle
    blow, sound, blare, echo
subway | vehicles | transit street | c
    subway train, tram, streetcar
    arrive, screech to a halt, pull away, rattle along the rails
airplane | vehicles | sky transit | c
    airplane, plane, jet, jet plane, small plane, airliner
    fly overhead, take off, pass overhead, roar overhead, fly low, drone overhead
helicopter | vehicles | sky street | c
    helicopter, helicopters:p
    hover overhead, fly overhead, circle overhead, whir overhead
boat | vehicles | water | c
    boat, motorboat, speedboat, fishing boat
    pass by, idle, speed across the water, chug along
ship_horn | vehicles | water | e
    ship horn, foghorn, ship
    sound, blare, bellow, echo
bicycle | vehicles | street nature | c
    bicycle, bike, bicycles:p
    pass by, rattle over cobblestones, coast downhill
skateboard | vehicles | street | e
    skateboard, skateboards:p
    roll past, clatter, grind on a rail, @on concrete
emergency | vehicles | street | e
    ambulance, police car, fire truck
    speed past, race down the street, race through traffic
tractor | vehicles | farm | c
    tractor, old tractor
    chug, rumble, idle, plow a field
race_car | vehicles | venue street | c
    race car, race cars:p, dragster
    zoom past, roar past, scream past, speed around a track
tires | vehicles | street | e
    tires:p, car tires:p
    screech, squeal, skid on wet pavement, crunch over gravel, @on wet pavement
car_door | vehicles | street | e
    car door, car doors:p, trunk
    slam, open, close, slam shut
brakes | vehicles | street transit | e
    brakes:p, old brakes:p
    squeal, hiss, screech, grind
wipers | vehicles | street | c
    windshield wipers:p, wipers:p
    squeak, swish back and forth, thump
forklift | vehicles | work | e
    forklift, small forklift
    beep, whir, reverse, lift a pallet
drill | machines | work home | e
    drill, power drill, electric drill
    whir, buzz, drill into a wall, drill into wood, spin up
saw | machines | work | e
    circular saw, table saw, hand saw
    whine, buzz, cut through wood, spin down, rasp back and forth
chainsaw | machines | nature work | c
    chainsaw
    roar, buzz, cut through a log, start up, idle
hammer | machines | work home | e
    hammer, hammers:p, mallet
    pound a nail, strike metal, tap, bang on wood
jackhammer | machines | street work | c
    jackhammer, pneumatic drill
    pound, rattle, hammer away, break up concrete
sander | machines | work | c
    sander, electric sander, belt sander
    buzz, whir, hum
grinder | machines | work | c
    angle grinder, grinder, bench grinder
    whine, grind metal, screech, cut through steel
compressor | machines | work | c
    air compressor, compressor
    hum, rattle, hiss, kick on
generator | machines | work street | c
    generator, diesel generator, power generator
    hum, drone, rumble, run, sputter
fan | machines | home office | c
    fan, ceiling fan, electric fan, desk fan
    whir, hum, spin, rattle, click
air_conditioner | machines | home office | c
    air conditioner, air conditioning unit, heater, space heater
    hum, rattle, blow, drone, tick
lawn_mower | machines | garden | c
    lawn mower, mower, riding mower
    run, buzz, drone, start up, cut grass
leaf_blower | machines | garden street | c
    leaf blower
    roar, whine, drone, blow leaves
sewing_machine | machines | home | c
    sewing machine, old sewing machine
    whir, rattle, hum, stitch
printer | machines | office | e
    printer, office printer, laser printer, photocopier
    print, whir, hum, feed paper, jam
typewriter | machines | office | e
    typewriter, old typewriter
    clack, clatter, ding
clock | machines | home office | c
    clock, wall clock, old clock, clocks:p, pocket watch
    tick, tick away
    + steadily, softly, loudly, quietly, faintly
industrial | machines | work | c
    machine, machinery:m, industrial machine, conveyor belt, heavy machinery:m
    hum, clank, whir, grind, rumble
motor | machines | work home | c
    electric motor, motor, small motor
    hum, whine, spin up, buzz
pump | machines | work home | c
    pump, water pump
    hum, chug, thump, gurgle
elevator | machines | office transit | e
    elevator
    ding, hum, arrive, open, rise
escalator | machines | transit venue | c
    escalator, moving walkway
    hum, rattle, clank
cash_register | machines | venue | e
    cash register, till
    ring, ding, open, chime
camera | machines | home street venue | e
    camera, camera shutter, old camera
    click, whir, snap
computer | machines | office home | c
    computer, laptop, old computer, server
    hum, whir, beep, chime
shredder | machines | office | e
    paper shredder, shredder
    whir, grind, shred paper
impact_wrench | machines | work | e
    impact wrench, air wrench, ratchet
    whir, rattle, zip, click
nail_gun | machines | work | e
    nail gun, staple gun
    pop, thump, fire
sawing | machines | work nature | e
    someone:n, carpenter, man
    saw through a plank, saw wood, sand a board, plane a board
door | domestic | home office | e
    door, front door, wooden door, old door, heavy door
    slam, slam shut, creak open, creak, close, open, swing shut, bang
knocking | domestic | home office | e
    someone:n, visitor, man, woman
    knock on a door, knock on a wooden door, tap on a window, rap on a door
keys | domestic | home street | e
    keys:p, set of keys, bunch of keys
    jingle, jangle, rattle, clink
dishes | domestic | home venue | e
    dishes:p, plates:p, cutlery:m, pots and pans:p
    clatter, clink, rattle, clank
glass_breaking | domestic | home street | e
    glass:m, window, bottle, glass bottle, wine glass
    shatter, break, smash, crash to the floor
glasses | domestic | venue home | e
    glasses:p, wine glasses:p, champagne glasses:p
    clink, chime, clink together
kettle | domestic | home | c
    kettle, tea kettle
    whistle, boil, hiss, click off
microwave | domestic | home | c
    microwave, microwave oven
    hum, beep, ding
frying | domestic | home venue | c
    frying pan, pan, oil:m, bacon:m, onions:p
    sizzle, crackle, spit, pop
pot | domestic | home | c
    pot, pot of water, pot of soup, saucepan
    boil, bubble, simmer, boil over
chopping | domestic | home venue | e
    someone:n, cook, chef
    chop vegetables, chop onions, slice bread, dice carrots
blender | domestic | home venue | c
    blender, food processor, electric mixer
    whir, blend, pulse, grind, buzz
dishwasher | domestic | home | c
    dishwasher
    run, hum, slosh, drain
washing_machine | domestic | home | c
    washing machine, dryer, tumble dryer
    spin, hum, rumble, rattle, thump
vacuum | domestic | home office | c
    vacuum cleaner, vacuum
    run, roar, hum, whine, drone
toilet | domestic | home office | e
    toilet
    flush, gurgle, refill
hair_dryer | domestic | home | c
    hair dryer, blow dryer
    blow, whir, roar, hum
fridge | domestic | home | c
    refrigerator, fridge, old fridge, freezer
    hum, buzz, drone, click on
drawer | domestic | home office | e
    drawer, kitchen drawer, drawers:p
    open, slide open, slam shut, rattle, squeak
cupboard | domestic | home | e
    cupboard, cabinet, cabinet door
    open, close, creak open, bang shut
window | domestic | home | e
    window, sliding window, old window
    slide open, rattle, creak, slide shut
zipper | domestic | home | e
    someone:n, person, traveler
    zip up a jacket, unzip a bag, zip a suitcase
paper | domestic | home office | e
    paper:m, newspaper, sheet of paper, map
    rustle, crinkle, tear, flutter
plastic_bag | domestic | home venue | e
    plastic bag, bag of chips, wrapper
    rustle, crinkle, crackle
pages | domestic | office home | e
    someone:n, reader, student
    turn the pages of a book, flip through a book, leaf through a magazine
scissors | domestic | home office | e
    scissors:p, pair of scissors
    snip, cut through paper, cut fabric
coins | domestic | home venue | e
    coins:p, loose change:m
    jingle, clink, drop onto a table, spin on a table
ice | domestic | home venue | e
    ice cubes:p, ice:m
    clink in a glass, rattle in a glass, crack, tumble into a glass
chair | domestic | home office | e
    chair, wooden chair, chairs:p, office chair, rocking chair
    creak, scrape across the floor, squeak, roll across the floor
floorboards | domestic | home | e
    floorboards:p, old floor, wooden floor, staircase
    creak, squeak, groan
light_switch | domestic | home office | e
    light switch, switch, lamp
    click, click on, click off
television | domestic | home | c
    television, tv, radio, old radio
    play, hum, crackle, murmur, blare, play the news
cork | domestic | home venue | e
    cork, champagne cork, wine cork
    pop, pop out of a bottle, squeak out of a bottle
soda_can | domestic | home | e
    soda can, can of soda, bottle of soda
    open with a hiss, fizz, crack open
pouring | domestic | home venue | e
    someone:n, waiter, bartender
    pour a drink, pour water into a glass, pour coffee into a mug, pour a glass of wine
sweeping | domestic | home street | c
    someone:n, janitor, cleaner
    sweep the floor, sweep a porch, scrub a pan, mop the floor
spoon | domestic | home venue | e
    spoon, teaspoon, fork
    clink against a cup, stir a cup of tea, tap against a glass, scrape a plate
espresso | domestic | home venue | c
    espresso machine, coffee machine, coffee maker
    hiss, gurgle, grind, whir, drip
rain | nature | nature street garden | c
    rain:m, heavy rain:m, light rain:m, steady rain:m, raindrops:p
    fall, pour, patter, drizzle, pour down, beat against a window, drum on a roof
    @on a tin roof, @on a window, @on an umbrella, @on leaves, @on a car roof
thunder | nature | sky nature | e
    thunder:m, thunderclap, clap of thunder, rolling thunder:m
    rumble, roll, crack, boom, crash
storm | nature | sky nature | c
    storm, thunderstorm, rainstorm, blizzard
    rage, pass overhead, rumble, blow through
wind | nature | nature street water sky | c
    wind:m, strong wind:m, gusty wind:m, breeze, cold wind:m
    blow, howl, gust, whistle, rush through the trees, whistle through a window
    @in the trees, @against a window
leaves | nature | nature garden | c
    leaves:p, dry leaves:p, fallen leaves:p, autumn leaves:p
    rustle, crunch underfoot, crackle, blow across a path, @in the wind
fire | nature | nature home | c
    fire, campfire, fireplace, bonfire, wood fire
    crackle, pop, hiss, roar, burn
hail | nature | nature street garden | c
    hail:m, hailstones:p
    fall, pelt a roof, bounce off a car, clatter on a roof, @on a car roof
snow | nature | nature | e
    snow:m, fresh snow:m, crusty snow:m
    crunch underfoot, squeak underfoot, @under boots
ice_crack | nature | nature water | e
    ice:m, frozen lake, sheet of ice, glacier
    crack, creak, groan, split
tree | nature | nature | e
    tree, old tree, branch, large branch
    creak, fall, crash to the ground, snap, crack in the wind
twigs | nature | nature garden | e
    twigs:p, twig, dry sticks:p
    snap, crack, @underfoot
boots | nature | nature farm | e
    boots:p, rubber boots:p, hiking boots:p
    squelch through mud, crunch through snow, stomp on a trail, @in the mud
avalanche | nature | nature sky | e
    avalanche, landslide, rockslide, falling rocks:p
    rumble, thunder down a mountain, roar
stream | water | nature | c
    stream, brook, creek, small stream
    babble, trickle, gurgle, flow, flow over rocks
river | water | nature water | c
    river, rushing river, wide river, rapids:p
    flow, rush, roar, churn
waterfall | water | nature | c
    waterfall, small waterfall, cascade
    roar, thunder, crash, rush, splash onto rocks
waves | water | water | c
    waves:p, ocean waves:p, small waves:p, surf:m
    crash, lap against the shore, break on the shore, roll in, wash up on the beach
    @on a rocky shore, @against a pier
tap | water | home | c
    tap, faucet, kitchen faucet, bathroom tap, shower
    drip, run, gush, trickle, leak, sputter
dripping | water | home nature | e
    drops of water:p, water:m, melting ice:m
    drip from a tap, drip into a bucket, drip in a cave, trickle down a drain, splash
swimming | water | water venue | e
    someone:n, child, kids:p, swimmer, swimmers:p
    splash in a pool, dive into the water, paddle in a pool, jump into a lake
bathtub | water | home | c
    bathtub, bath, sink
    fill, drain, overflow, gurgle
fountain | water | street garden | c
    fountain, water fountain, garden fountain, drinking fountain
    splash, trickle, bubble, gurgle, flow
pipes | water | home | c
    pipes:p, drain, old pipes:p, gutter
    gurgle, knock, drip, rattle, rush
sprinkler | water | garden | c
    sprinkler, lawn sprinkler, sprinklers:p
    hiss, spray, tick, click, water a lawn
hose | water | garden street | c
    garden hose, hose, pressure washer
    spray, splash, gush, spray a driveway
aquarium | water | home office | c
    aquarium, fish tank, air pump
    bubble, gurgle, hum
oars | water | water | e
    oars:p, paddle, canoe, kayak
    splash, creak, dip into the water, slap the water
piano | music | home venue | m
    piano, grand piano, old piano, upright piano
    play, play a slow melody, play a gentle tune, play chords
musician | music | home venue street | m
    someone:n, musician, man, woman, girl, boy, student
    play the piano, play the guitar, play the violin, play the drums, strum a guitar
    tune a guitar, practice the trumpet, play the flute, play scales on the piano
guitar | music | home venue street | m
    guitar, acoustic guitar, electric guitar, bass guitar
    play, strum, twang, play a melody, play a blues riff
violin | music | venue home | m
    violin, cello, viola, fiddle, double bass
    play, play a sad melody, screech, play a slow waltz
drums | music | venue street | m
    drums:p, drum kit, snare drum, bass drum, bongos:p
    beat, pound, play a fast rhythm, play a steady beat, thump, rattle
brass | music | venue street | m
    trumpet, trombone, tuba, saxophone, french horn
    play, blare, play a jazz tune, play a fanfare, play a long note
flute | music | venue home nature | m
    flute, recorder, clarinet, oboe, pan flute
    play, trill, play a melody, play a folk tune
harp | music | venue home | m
    harp, lute, zither
    play, play a soft melody, ring out
bagpipes | music | street venue nature | m
    bagpipes:p, bagpipe
    drone, play, wail, play a march
accordion | music | street venue | m
    accordion, harmonica, concertina
    play, wheeze, play a waltz, play a folk song
organ | music | venue | m
    organ, church organ, pipe organ
    play, drone, play a hymn, resonate
xylophone | music | venue home | m
    xylophone, marimba, glockenspiel, vibraphone
    play, tinkle, play a scale, ring
music_box | music | home | m
    music box, toy piano
    play, tinkle, play a lullaby
orchestra | music | venue street | m
    orchestra, string quartet, brass band, marching band, jazz band, rock band, band
    play, perform, tune up, play a waltz, perform a symphony
choir | music | venue | m
    choir, church choir, chorus, children's choir
    sing, sing a hymn, chant, sing in harmony
music | music | home venue street | m
    music:m, pop music:m, jazz music:m, classical music:m, dance music:m, song
    play, blare, drift from a window, play on a radio, play from a speaker, thump
singer | music | venue street | m
    singer, opera singer, female singer, male singer, rapper
    sing, perform a song, hit a high note, sing a ballad
tambourine | music | venue street | m
    tambourine, maracas:p, shaker
    jingle, rattle, shake
cymbals | music | venue | e
    cymbal, cymbals:p, gong, crash cymbal
    crash, clash, ring out, shimmer
synthesizer | music | venue home | m
    synthesizer, synth, keyboard, electric organ
    hum, drone, play a melody, pulse, play an arpeggio
ukulele | music | home street | m
    ukulele, banjo, mandolin, sitar
    play, strum, twang, play a cheerful tune
metronome | music | home | e
    metronome
    tick, click, tick steadily
wind_chimes | music | garden home | c
    wind chimes:p, chimes:p, wind chime
    tinkle, jingle, chime, ring, clink in the breeze
alarm_clock | alarms | home | e
    alarm clock, alarm, old alarm clock
    ring, beep, buzz, go off
smoke_alarm | alarms | home office | e
    smoke alarm, smoke detector, fire alarm
    beep, chirp, go off, sound, shriek
car_alarm | alarms | street | e
    car alarm, car alarms:p
    go off, blare, wail, whoop, chirp
siren | alarms | street | c
    siren, police siren, ambulance siren, fire truck siren, sirens:p
    wail, pass by, blare, sound, fade away, approach, grow louder
church_bells | alarms | street nature venue | e
    church bell, church bells:p, bells:p, large bell, bell tower
    ring, toll, chime, peal, ring out
doorbell | alarms | home | e
    doorbell, door chime
    ring, chime, buzz
phone | alarms | home office | e
    phone, telephone, mobile phone, cell phone, old telephone, phones:p
    ring, buzz, vibrate, beep, chime, vibrate on a table
timer | alarms | home | e
    kitchen timer, timer, oven timer, egg timer
    beep, ding, ring, tick, go off
backup_beeper | alarms | street work | e
    backup alarm, reversing alarm, reversing truck
    beep, sound, chirp
buzzer | alarms | home office venue | e
    buzzer, door buzzer, game show buzzer
    buzz, sound, go off
air_horn | alarms | venue water | e
    air horn, stadium horn, boat horn
    blast, sound, blare, honk
whistle | alarms | venue street | e
    whistle, referee whistle, police whistle, coach whistle
    blow, sound, blast, trill
school_bell | alarms | office | e
    school bell, bell, hand bell
    ring, clang, ring out
crosswalk | alarms | street | e
    crosswalk signal, pedestrian signal, crossing signal
    beep, chirp, tick, click
railroad_crossing | alarms | street transit | e
    railroad crossing, crossing bell, level crossing
    ding, clang, ring
monitor | alarms | home venue | e
    heart monitor, hospital monitor, electronic device, pager
    beep, chirp, chime, ping
air_raid | alarms | street sky | c
    air raid siren, warning siren, tornado siren
    wail, sound, drone
clock_tower | alarms | street | e
    grandfather clock, clock tower, mantel clock
    chime, strike the hour, strike midnight, bong
crowd | urban | venue street | v
    crowd, large crowd, audience, spectators:p, fans:p
    cheer, applaud, roar, chant, murmur, boo, gasp
applause | urban | venue | e
    applause:m, loud applause:m, polite applause:m
    ring out, break out, die down, fill a hall, @from a large audience
traffic | urban | street | c
    traffic:m, heavy traffic:m, city traffic:m, rush hour traffic:m
    pass by, rush past, hum, roar, crawl along, @on a highway, @on a wet road
construction | urban | street work | e
    construction workers:p, workers:p, builders:p
    hammer, shout, drill, clang metal, unload pipes
fireworks | urban | sky street | e
    fireworks:p, firework, firecrackers:p
    explode, pop, crackle, bang, boom, whistle
gunshot | urban | nature street | e
    gunshot, gunshots:p, rifle shot, shotgun blast, shots:p
    ring out, echo, crack, bang
explosion | urban | sky street work | e
    explosion, blast, detonation
    boom, rumble, echo, shake the ground
chatter | urban | venue street transit | v
    people:p, diners:p, shoppers:p, customers:p, guests:p, students:p
    chatter, talk, murmur, chat, talk over music
protest | urban | street | v
    protesters:p, demonstrators:p, marchers:p
    chant, shout slogans, march past, cheer, bang on drums
commuters | urban | transit street | e
    commuters:p, passengers:p, pedestrians:p, tourists:p
    rush past, shuffle along, walk past, hurry down the stairs
shopping_cart | urban | venue street | e
    shopping cart, trolley, luggage cart, suitcase
    rattle, squeak, roll across a floor, roll along a sidewalk
turnstile | urban | transit venue | e
    turnstile, ticket gate, revolving door
    click, clank, spin, beep
basketball | urban | venue street | e
    basketball, ball, tennis ball, soccer ball, ping pong ball
    bounce, bounce on a court, hit a wall, roll across a floor
bowling | urban | venue | e
    bowling ball, bowling balls:p
    roll down a lane, crash into pins, rumble down a lane
arcade | urban | venue | c
    arcade machines:p, slot machines:p, slot machine, pinball machine
    beep, chime, jingle, ring, clatter
trash_can | urban | street home | e
    trash can, garbage can, dumpster, trash cans:p
    clang, rattle, bang, tip over
busker | urban | street transit | m
    street musician, busker, street performer
    play the saxophone, sing, play an accordion, drum on buckets, play a guitar
ice_cream_truck | urban | street | e
    ice cream truck, ice cream van
    play a jingle, play a tune, drive slowly past
street_sweeper | urban | street | c
    street sweeper, garbage truck, snowplow
    whir, hum, scrape the road, grind along
"""


@dataclass(frozen=True)
class Noun:
    """One way to name a source: ``text`` and its grammatical ``number`` (s, p, m, n)."""

    text: str
    number: str


@dataclass(frozen=True)
class Source:
    """A sound source: its names, what it does, where it is heard, and how it sounds."""

    key: str
    family: str
    envs: tuple[str, ...]
    kind: str
    nouns: tuple[Noun, ...]
    verbs: tuple[str, ...]
    phrases: tuple[str, ...]
    adverbs: tuple[str, ...]

    @property
    def indoor(self) -> bool:
        return any(env in INDOOR for env in self.envs)

    @property
    def outdoor(self) -> bool:
        return any(env in OUTDOOR for env in self.envs)


def _noun(text: str) -> Noun:
    text, _, number = text.partition(":")
    return Noun(text, number or "s")


def _parse(table: str) -> tuple[Source, ...]:
    blocks: list[list[str]] = []
    for line in table.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            blocks[-1].append(line.strip())
        else:
            blocks.append([line])
    sources = []
    for header, nouns, *rest in blocks:
        key, family, envs, kind = (part.strip() for part in header.split("|"))
        verbs: list[str] = []
        phrases: list[str] = []
        adverbs: list[str] = []
        for line in rest:
            if line.startswith("+"):
                adverbs.extend(item.strip() for item in line[1:].split(","))
                continue
            for item in (part.strip() for part in line.split(",")):
                (phrases if item.startswith("@") else verbs).append(item.lstrip("@"))
        sources.append(
            Source(
                key=key,
                family=family,
                envs=tuple(envs.split()),
                kind=kind,
                nouns=tuple(_noun(part.strip()) for part in nouns.split(",")),
                verbs=tuple(verbs),
                phrases=tuple(phrases),
                adverbs=ADVERBS[kind] + tuple(adverbs),
            )
        )
    return tuple(sources)


SOURCES: tuple[Source, ...] = _parse(_TABLE)
